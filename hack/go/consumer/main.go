// Command consumer is a workload as users write them: the official Databricks SDK for Go, configured only by its
// environment, read once at start (a ServicePrincipal's Secret through envFrom, or a TrustPolicy's ConfigMap plus
// a projected ServiceAccount token for file-oidc). Every interval it builds a fresh client from that environment,
// so every call signs in anew, and calls the account API. A 403 still proves the sign-in worked: the principal is
// simply not an account admin. Each call appends one line to $CONSUMER_LOG_DIR/$POD_NAME.log (a hostPath the test
// reads after the Pod is gone): "ok" or "fail <error>". Never prints a credential.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/databricks/databricks-sdk-go"
	"github.com/databricks/databricks-sdk-go/service/iam"
)

func main() {
	interval, err := time.ParseDuration(getenv("CONSUMER_INTERVAL", "500ms"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "CONSUMER_INTERVAL:", err)
		os.Exit(2)
	}
	path := filepath.Join(getenv("CONSUMER_LOG_DIR", "/tmp"), getenv("POD_NAME", "consumer")+".log")
	out, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "opening the call log:", err)
		os.Exit(2)
	}
	defer out.Close()
	for {
		line := "ok"
		if err := call(); err != nil {
			line = "fail " + err.Error()
		}
		fmt.Fprintln(out, line)
		fmt.Println(time.Now().UTC().Format(time.RFC3339), line)
		time.Sleep(interval)
	}
}

func call() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := databricks.NewAccountClient()
	if err != nil {
		return err
	}
	_, err = a.ServicePrincipals.ListAll(ctx, iam.ListAccountServicePrincipalsRequest{Count: 1})
	if errors.Is(err, databricks.ErrPermissionDenied) {
		return nil
	}
	return err
}

func getenv(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}
