// Evaluates an Argo CD health Lua script with gopher-lua, the interpreter Argo CD embeds: the object (JSON) on
// stdin becomes the global `obj`; the returned table is printed as JSON. Used by tests/argocd_health.rs.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	lua "github.com/yuin/gopher-lua"
)

func toLua(L *lua.LState, v interface{}) lua.LValue {
	switch t := v.(type) {
	case map[string]interface{}:
		table := L.NewTable()
		for k, item := range t {
			table.RawSetString(k, toLua(L, item))
		}
		return table
	case []interface{}:
		table := L.NewTable()
		for _, item := range t {
			table.Append(toLua(L, item))
		}
		return table
	case string:
		return lua.LString(t)
	case float64:
		return lua.LNumber(t)
	case bool:
		return lua.LBool(t)
	default:
		return lua.LNil
	}
}

func main() {
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var obj interface{}
	if err := json.NewDecoder(os.Stdin).Decode(&obj); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	L := lua.NewState()
	defer L.Close()
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(string(script)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	result, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		fmt.Fprintln(os.Stderr, "the script returned no table")
		os.Exit(1)
	}
	out := map[string]string{
		"status":  result.RawGetString("status").String(),
		"message": result.RawGetString("message").String(),
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}
