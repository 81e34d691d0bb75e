"""The import direction shows the architecture (docs/architecture.md): each package imports
only from the layers below it, and nothing imports in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import embedrec

SOURCE = Path(embedrec.__file__).parent
# lowest first; a module may import its own package and any lower layer, nothing else
LAYERS = [
    {"version", "cache", "geo", "ranking", "memory"},
    {"data"},
    {"features", "index", "evaluation", "bundle", "datasets"},
    {"models"},
    {"training", "retrieval"},
    {"recommender"},
    {"viz"},
    {"serving"},
    {"cli", "__init__"},
    {"__main__"},  # python -m embedrec: the command line
]


def package_of(module: str) -> str:
    """``embedrec.models.hybrid`` -> ``models``; ``embedrec`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(package: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if package in layer)


def imports() -> dict[str, set[str]]:
    """embedrec module -> the embedrec modules it imports (at any depth of its code)."""
    graph: dict[str, set[str]] = {}
    for path in SOURCE.rglob("*.py"):
        relative = path.relative_to(SOURCE.parent).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m == "embedrec" or m.startswith("embedrec.")}
    return graph


def test_every_package_is_placed_in_a_layer():
    packages = {package_of(m) for m in imports()}
    placed = set().union(*LAYERS)
    assert packages <= placed, f"not in docs/architecture.md's layers: {packages - placed}"


def test_imports_point_down_the_layers():
    wrong = []
    for module, targets in imports().items():
        source = package_of(module)
        for target in targets:
            destination = package_of(target)
            if destination != source and layer_of(destination) >= layer_of(source):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles_between_packages():
    graph: dict[str, set[str]] = {}
    for module, targets in imports().items():
        source = package_of(module)
        graph.setdefault(source, set()).update(
            package_of(t) for t in targets if package_of(t) != source
        )

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for step in graph.get(start, ()):
            if step == goal or (step not in seen and reaches(step, goal, seen | {step})):
                return True
        return False

    cycles = [package for package in graph if reaches(package, package, {package})]
    assert not cycles, f"packages in an import cycle: {cycles}"


def test_the_command_line_imports_no_web_framework_until_it_serves():
    """Every command registers ``serve``; only serving may load FastAPI and pydantic (a
    training rank would hold them for nothing)."""
    import subprocess
    import sys

    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, embedrec.cli; print(*sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert not {"fastapi", "pydantic", "starlette", "uvicorn"} & set(loaded.split())
