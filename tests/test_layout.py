"""The core's layout: one package per domain, no import circle, and nothing from ComfyUI."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "arc2face_core"
DOMAINS = {"faces", "identity", "pose", "expression", "reference", "diffusers_backend", "datasets", "cli"}
# Bottom to top: a package may import only from the layers below its own. The diffusers backend (model files,
# pipeline, ControlNet, LoRA, LCM scheduler, devices) sits below the datasets, and the command line above both.
LAYERS = (
    ("errors",),
    ("validation", "weights", "checkpoints", "images"),
    ("batching",),
    ("identity",),
    ("faces", "reference"),
    ("expression",),
    ("pose",),
    ("diffusers_backend",),
    ("datasets",),
    ("cli",),
    ("__main__",),
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module this file imports, at the top or inside functions, resolved to absolute names."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)   # "from . import x" imports module x
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in CORE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_one_package_per_domain_and_no_flat_modules_beyond_the_plumbing():
    packages = {p.name for p in CORE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == DOMAINS
    flat = {p.stem for p in CORE.glob("*.py")}
    assert flat == {"__init__", "__main__", "errors", "weights", "checkpoints", "images", "batching", "validation"}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return cycles


def test_no_import_circle():
    assert _cycles(_graph()) == []


def test_the_checker_finds_a_circle(tmp_path, monkeypatch):
    """The circle check can fail: two modules importing each other (one lazily, inside a function) are found."""
    fake = tmp_path / "arc2face_core"
    (fake / "cli").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "cli" / "__init__.py").write_text("")
    (fake / "cli" / "a.py").write_text("from .b import f\n")
    (fake / "cli" / "b.py").write_text("def f():\n    from .a import g\n")
    monkeypatch.setattr(__import__(__name__), "CORE", fake)
    assert _cycles(_graph()) == [["arc2face_core.cli.a", "arc2face_core.cli.b", "arc2face_core.cli.a"]]


def _layer(module: str) -> int | None:
    """The layer of a core module (None for the package itself, whose ``__version__`` every layer may read)."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return next(i for i, names in enumerate(LAYERS) if parts[1] in names)


def _climbing_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    climbs = []
    for module, imported in sorted(graph.items()):
        own = _layer(module)
        for other in sorted(imported):
            theirs = _layer(other)
            if own is not None and theirs is not None and other.split(".")[1] != module.split(".")[1] and theirs >= own:
                climbs.append((module, other))
    return climbs


def test_every_package_has_a_layer():
    packages = {p.name for p in CORE.iterdir() if (p / "__init__.py").is_file()} | {p.stem for p in CORE.glob("*.py")}
    assert packages - {"__init__"} == {name for names in LAYERS for name in names}


def test_no_import_climbs_back_up():
    """The datasets build on the diffusers backend, the command line on both: nothing below imports what is above."""
    assert _climbing_imports(_graph()) == []


def test_the_checker_finds_an_import_that_climbs(tmp_path, monkeypatch):
    """A backend module that imports the datasets (lazily, inside a function) is found."""
    fake = tmp_path / "arc2face_core"
    for package in ("datasets", "diffusers_backend"):
        (fake / package).mkdir(parents=True)
        (fake / package / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "datasets" / "store.py").write_text("from ..diffusers_backend.pipeline import run\n")
    (fake / "diffusers_backend" / "pipeline.py").write_text("def run():\n    from ..datasets.store import x\n")
    monkeypatch.setattr(__import__(__name__), "CORE", fake)
    assert _climbing_imports(_graph()) == [("arc2face_core.diffusers_backend.pipeline", "arc2face_core.datasets.store")]


def test_the_core_imports_nothing_from_comfyui():
    offenders = {}
    for path in CORE.rglob("*.py"):
        bad = {m for m in _imports(path) if m.split(".")[0] in ("comfy", "folder_paths", "nodes", "comfy_extras")}
        if bad:
            offenders[str(path.relative_to(CORE))] = sorted(bad)
    assert offenders == {}
