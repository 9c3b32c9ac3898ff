"""The package's layering, read from its import statements (those inside functions too): each module imports
only modules of its own layer or below, so data flows one way and there are no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "latentforge"

# Lowest first. A module may import modules of its own layer and of any layer below.
LAYERS = [
    ("foundation", ["errors", "io", "settings", "precision", "memory"]),
    ("data", ["data"]),
    ("nn", ["nn"]),
    ("models", ["models"]),
    ("checkpoint", ["checkpoint"]),
    ("train", ["train", "train_records", "distributed"]),
    ("metrics", ["metrics", "plots"]),
    ("tasks", ["tasks"]),
    ("run", ["report", "compare", "run", "export"]),
    ("estimators", ["estimators", "detectors", "recommenders"]),
    ("cli", ["cli", "cli_options", "cli_common", "cli_use", "cli_augment", "cli_classify", "cli_train", "cli_tasks", "__init__"]),
]


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for i, (_, names) in enumerate(LAYERS):
        if top in names:
            return i
    raise KeyError(f"{module} is in no layer; add it to LAYERS")


def modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out[name] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Package modules ``name`` imports (relative and absolute; the module itself excluded)."""
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                for cand in (f"{base}.{alias.name}", base):
                    if cand in known and cand != name:
                        found.add(cand)
                        break
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known and a.name != name}
    return found


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer_of(name)


def test_imports_follow_the_layer_order() -> None:
    known = modules()
    wrong = []
    for name, path in known.items():
        for dep in imports(name, path, known):
            if dep == "latentforge":  # the package root only re-exports; importing it lazily is not layering
                continue
            if layer_of(dep) > layer_of(name):
                wrong.append(f"{name} ({LAYERS[layer_of(name)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})")
    assert not wrong, "\n".join(wrong)


def test_the_layer_test_can_fail(tmp_path: Path) -> None:
    """A module of a low layer that imports a high one is caught."""
    pkg = tmp_path / "latentforge"
    (pkg / "data").mkdir(parents=True)
    (pkg / "data" / "__init__.py").write_text("from ..cli import main\n")
    (pkg / "cli.py").write_text("")
    known = {"latentforge.data": pkg / "data" / "__init__.py", "latentforge.cli": pkg / "cli.py"}
    deps = imports("latentforge.data", known["latentforge.data"], known)
    assert deps == {"latentforge.cli"} and layer_of("latentforge.cli") > layer_of("latentforge.data")


def test_no_import_cycles() -> None:
    known = modules()
    graph = {n: imports(n, p, known) for n, p in known.items()}
    seen: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(n: str, stack: list[str]) -> None:
        seen[n] = 1
        for d in graph[n]:
            if seen.get(d) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in seen:
                visit(d, stack + [d])
        seen[n] = 2

    for n in graph:
        if n not in seen:
            visit(n, [n])
