#!/usr/bin/env python3
"""The shape of src/, checked (`make lint` runs it; see docs/architecture.md):

- every import points down the layers: the binary, then the controllers' wiring (`run`), the kinds, `runtime`,
  `services`, `rules`, then `http`, `metrics`, `crd`, `databricks`;
- kinds never import kinds, and a module never imports an item of its own parent module;
- no import cycle between files;
- no function over 80 lines and no file over 800 lines (test modules left out).

Reads the `use` lines and the `crate::`/`super::` paths of every file (comments and strings left out), resolves
them to the file that defines the item (through `pub use` re-exports), and prints every violation; exit 1 if any.
"""
import os
import re
import sys

MAX_FN_LINES = 80
MAX_FILE_LINES = 800

# (module path prefix, layer, rank): an import may only point at a lower rank, or stay within its layer.
LAYERS = [
    (("controllers", "run"), "controllers::run", 80),
    (("controllers", "account"), "kind account", 70),
    (("controllers", "service_principal"), "kind service_principal", 70),
    (("controllers", "app_connection"), "kind app_connection", 70),
    (("controllers", "trust_policy"), "kind trust_policy", 70),
    (("controllers", "runtime"), "controllers::runtime", 60),
    (("controllers", "services"), "controllers::services", 50),
    (("controllers", "rules"), "controllers::rules", 40),
    (("controllers",), "controllers (facade)", 90),
    (("http",), "http", 35),
    (("metrics",), "metrics", 30),
    (("crd",), "crd", 20),
    (("databricks",), "databricks", 10),
    ((), "crate root", 100),
]


def strip(text):
    """The text without comments, string and char literals (newlines kept, so line numbers hold)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j
            out.append("\n" * text[i:j].count("\n"))
            i = j + 2
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j
            out.append('""' + "\n" * text[i:j].count("\n"))
            i = j + len(end)
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text[i:j].count("\n"))
            i = j + 1
        elif c == "'" and re.match(r"'(?:\\.|[^'\\])'", text[i:i + 4]):
            m = re.match(r"'(?:\\.|[^'\\])'", text[i:])
            out.append("' '")
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def without_tests(text):
    cut = text.find("#[cfg(test)]")
    return text if cut < 0 else text[:cut]


def module_of(rel):
    """src/a/b.rs -> ("a", "b"); src/a/mod.rs -> ("a",); src/lib.rs and src/main.rs -> ()."""
    parts = rel[:-3].split("/")[1:]
    if parts[-1] == "mod":
        parts = parts[:-1]
    if parts in (["lib"], ["main"]):
        parts = []
    return tuple(parts)


def expand(tree):
    """A use tree (`a::{b, c::{d as e, self}}`) as paths (aliases dropped)."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    tree = re.sub(r"\s+", "", tree)
    depth, split = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0 and split is None:
                split = i
            depth += 1
        elif ch == "}":
            depth -= 1
    if split is None:
        return [tree]
    prefix = tree[:split].rstrip(":")
    inner = tree[split + 1:tree.rindex("}")]
    items, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
    items.append(inner[start:])
    paths = []
    for item in filter(None, items):
        for sub in expand(item):
            if sub in ("self", "*"):
                paths.append(prefix)
            else:
                paths.append(f"{prefix}::{sub}" if prefix else sub)
    return paths


def clean_alias(path):
    """`a::b as c` -> `a::b`."""
    return re.sub(r"\s+as\s+\w+$", "", path.strip())


class Tree:
    def __init__(self, root):
        self.files = {}  # module -> (rel path, raw text, code without comments/strings/tests)
        for dirpath, _, names in os.walk(os.path.join(root, "src")):
            for name in names:
                if name.endswith(".rs"):
                    path = os.path.join(dirpath, name)
                    rel = os.path.relpath(path, root)
                    raw = open(path, encoding="utf-8").read()
                    module = ("<bin>",) if rel == "src/main.rs" else module_of(rel)
                    self.files[module] = (rel, raw, without_tests(strip(raw)))
        self.aliases = {}  # (module, name) -> module the name resolves to
        for module, (_, _, code) in self.files.items():
            for m in re.finditer(r"\bpub(?:\([\w:]+\))?\s+use\s+([^;]+);", code):
                for path in expand(m.group(1)):
                    path = clean_alias(path)
                    name = path.split("::")[-1]
                    self.aliases[(module, name)] = path

    def is_module(self, module):
        return module in self.files

    def resolve(self, current, path):
        """The module that defines what `path` (as written in `current`) names, or None when it is outside."""
        segments = [s for s in clean_alias(path).split("::") if s]
        if not segments:
            return None
        if segments[0] in ("crate", "databricks_oauth_operator"):
            return self.walk((), segments[1:], 0)
        if segments[0] in ("super", "self"):
            base = () if current == ("<bin>",) else current
            while segments and segments[0] in ("super", "self"):
                if segments.pop(0) == "super":
                    base = base[:-1]
            return self.walk(base, segments, 0)
        return None

    def walk(self, current, rest, depth):
        """Follows `rest` from module `current` through child modules and re-exports."""
        for i, segment in enumerate(rest):
            if self.is_module(current + (segment,)):
                current = current + (segment,)
                continue
            alias = self.aliases.get((current, segment))
            if alias is None or depth > 10:
                return current
            head = alias.split("::")[0]
            if head in ("crate", "databricks_oauth_operator", "super", "self"):
                target = self.resolve(current, alias)
            elif self.is_module(current + (head,)):
                target = self.walk(current, alias.split("::"), depth + 1)
            else:
                return current  # a re-export of another crate's item
            if target is None:
                return current
            return self.walk(target, rest[i + 1:], depth + 1)
        return current

    def imports(self, module):
        """(line, path) of every import of `module`."""
        _, _, code = self.files[module]
        found = []
        for m in re.finditer(r"\buse\s+([^;]+);", code):
            line = code.count("\n", 0, m.start()) + 1
            for path in expand(m.group(1)):
                found.append((line, path))
        for m in re.finditer(r"\b(?:crate|super|self|databricks_oauth_operator)(?:::\w+)+", code):
            line = code.count("\n", 0, m.start()) + 1
            found.append((line, m.group(0)))
        return found


def layer_of(module):
    if module == ("<bin>",):
        return "the binary", 110
    for prefix, name, rank in LAYERS:
        if module[:len(prefix)] == prefix:
            return name, rank
    return "crate root", 100


def name(module):
    return "crate::" + "::".join(module) if module and module != ("<bin>",) else ("src/main.rs" if module else "crate")


def check_imports(tree, problems):
    edges = {}
    for module in tree.files:
        rel = tree.files[module][0]
        for line, path in tree.imports(module):
            target = tree.resolve(module, path)
            if target is None or target == module or target not in tree.files:
                continue
            if target[:len(module)] == module and module != ():
                continue  # a module importing its own child
            source_layer, source_rank = layer_of(module)
            target_layer, target_rank = layer_of(target)
            where = f"{rel}:{line}"
            if module[:len(target)] == target and target != ():
                if source_layer == target_layer or target != ("controllers",):
                    problems.add(f"{where}: {name(module)} imports {path}, an item of its own parent module "
                                 f"{name(target)}; move it into a module of its own below both")
                continue
            if source_layer != target_layer:
                if source_rank == target_rank:
                    problems.add(f"{where}: {source_layer} imports {target_layer} ({path}): kinds never import "
                                 "kinds; move what both need into controllers::services or controllers::rules")
                elif source_rank < target_rank:
                    problems.add(f"{where}: {source_layer} imports {path} from {target_layer}, a higher layer")
            edges.setdefault(module, set()).add(target)
    return edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def check_lengths(tree, problems):
    for module, (rel, raw, code) in sorted(tree.files.items()):
        lines = raw.count("\n")
        if lines > MAX_FILE_LINES:
            problems.add(f"{rel}: {lines} lines (at most {MAX_FILE_LINES})")
        text = code.split("\n")
        for i, line in enumerate(text):
            m = re.search(r"\bfn\s+(\w+)", line)
            if not m:
                continue
            depth, started, j = 0, False, i
            for j in range(i, min(len(text), i + 2000)):
                for ch in text[j]:
                    if ch == "{":
                        depth += 1
                        started = True
                    elif ch == "}":
                        depth -= 1
                if started and depth <= 0:
                    break
                if not started and text[j].rstrip().endswith(";"):
                    break
            length = j - i + 1
            if started and length > MAX_FN_LINES:
                problems.add(f"{rel}:{i + 1}: fn {m.group(1)} is {length} lines (at most {MAX_FN_LINES})")


def problems_of(root):
    tree = Tree(root)
    problems = set()
    edges = check_imports(tree, problems)
    for component in cycles(edges):
        problems.add("import cycle among: " + ", ".join(name(m) for m in component))
    check_lengths(tree, problems)
    return problems


def self_test(root):
    """The check fails on each kind of violation: planted in a copy of `src/`, each must be reported."""
    import shutil
    import tempfile

    plants = {
        "kind imports kind": ("src/controllers/service_principal/mod.rs", "use crate::controllers::trust_policy::CONTROLLER;\n",
                              "kinds never import kinds"),
        "lower imports higher": ("src/controllers/rules/meta.rs", "use crate::controllers::runtime::context::Context;\n",
                                 "a higher layer"),
        "child imports parent": ("src/controllers/service_principal/rotation.rs", "use super::CONTROLLER;\n",
                                 "of its own parent module"),
        "cycle": ("src/databricks/response.rs", "use super::client::AccountClient;\n", "import cycle"),
        "long function": ("src/controllers/rules/intent.rs",
                          "pub fn long() {\n" + "    let _ = 1;\n" * 90 + "}\n", "fn long is"),
    }
    failures = []
    for what, (path, line, expected) in plants.items():
        with tempfile.TemporaryDirectory() as copy:
            shutil.copytree(os.path.join(root, "src"), os.path.join(copy, "src"))
            target = os.path.join(copy, path)
            text = open(target, encoding="utf-8").read()
            open(target, "w", encoding="utf-8").write(line + text)
            found = problems_of(copy)
            if not any(expected in p for p in found):
                failures.append(f"{what} ({path}) was not reported: {sorted(found)}")
    for failure in failures:
        print(f"self-test: {failure}")
    return 1 if failures else 0


def main():
    root = next((a for a in sys.argv[1:] if not a.startswith("--")), ".")
    if "--self-test" in sys.argv:
        return self_test(root)
    problems = problems_of(root)
    for problem in sorted(problems):
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) with the shape of src/ (see docs/architecture.md)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
