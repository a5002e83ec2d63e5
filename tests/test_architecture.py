"""The import rules of docs/architecture.md: each part imports only the parts below it (function-level
imports included), and no module imports another that imports it back at module level."""

from __future__ import annotations

import ast
from pathlib import Path

import ragrec

SRC = Path(ragrec.__file__).parent
# Lowest first; a part may import its own layer and the layers below (docs/architecture.md).
LAYERS = [
    {"errors", "types", "schema", "config", "io", "paths", "registry", "tasks", "ranking", "wheels"},
    {"data"},
    {"retrieval"},
    {"prompts"},
    {"inference"},
    {"eval"},
    {"pipeline"},
    {"finetune"},
    {"demo", "serve", "integrations", "batch"},
    {"cli", "__main__", "__init__"},
]
LEVEL = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def _module(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(("ragrec", *parts)).removesuffix(".__init__")


def _imports(tree: ast.AST, module_level: bool) -> list[tuple[str, int]]:
    """(imported ragrec module, line) of every import; with ``module_level`` only those that run
    on import (not inside functions, not under ``if TYPE_CHECKING``)."""
    out: list[tuple[str, int]] = []

    def visit(nodes) -> None:
        for n in nodes:
            if module_level and isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if module_level and isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
                continue
            if isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0] == "ragrec":
                if n.module == "ragrec":  # from ragrec import schema: the submodule when there is one
                    out.extend((f"ragrec.{a.name}" if (SRC / f"{a.name}.py").exists() or (SRC / a.name).is_dir()
                                else "ragrec", n.lineno) for a in n.names)  # fmt: skip
                else:
                    out.append((n.module, n.lineno))
            elif isinstance(n, ast.Import):
                out.extend((a.name, n.lineno) for a in n.names if a.name.split(".")[0] == "ragrec")
            for field in ("body", "orelse", "finalbody", "handlers"):
                visit(getattr(n, field, []) or [])

    visit(tree.body)
    return out


def _part(module: str) -> str:
    bits = module.split(".")
    return bits[1] if len(bits) > 1 else "__init__"


def _sources() -> dict[str, ast.AST]:
    return {_module(p): ast.parse(p.read_text("utf-8")) for p in sorted(SRC.rglob("*.py"))}


def test_every_part_has_a_layer():
    parts = {_part(m) for m in _sources()}
    assert parts <= set(LEVEL), f"parts without a layer in LAYERS and docs/architecture.md: {parts - set(LEVEL)}"


def test_parts_import_only_layers_below():
    wrong = []
    for module, tree in _sources().items():
        for target, line in _imports(tree, module_level=False):
            a, b = _part(module), _part(target)
            if b == "__init__" or a == b:
                continue
            if LEVEL[b] > LEVEL[a]:
                wrong.append(f"{module}:{line} ({a}, layer {LEVEL[a]}) imports {target} ({b}, layer {LEVEL[b]})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_modules():
    sources = _sources()
    graph = {m: {t for t, _ in _imports(tree, module_level=True) if t in sources and t != m}
             for m, tree in sources.items()}  # fmt: skip
    for m in graph:  # importing a package's submodule runs the package's __init__ first: not a cycle by itself
        graph[m] = {t for t in graph[m] if not m.startswith(t + ".")}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m: str, path: list[str]) -> bool:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle.extend(path[path.index(t) :] + [m, t] if t in path else [m, t])
                return True
            if t not in state and visit(t, [*path, m]):
                return True
        state[m] = 2
        return False

    for m in sorted(graph):
        if m not in state and visit(m, []):
            break
    assert not cycle, " -> ".join(cycle)


def test_the_architecture_note_lists_every_part():
    note = (SRC.parents[1] / "docs" / "architecture.md").read_text("utf-8")
    for part in LEVEL:
        if part not in ("__main__", "__init__"):
            assert f"`{part}" in note, f"docs/architecture.md does not mention {part}"
