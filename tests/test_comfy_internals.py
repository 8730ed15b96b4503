"""The nodes reach ComfyUI internals only through nodes/comfy_internals.py, which lists each one, and the docs list
them too. (That each exists in the tested ComfyUI, and the refusal when one is gone: test_live_internals_guard.py.)
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NODES = REPO / "nodes"
COMFY_MODULES = ("comfy", "comfy_extras", "comfy_execution", "comfy_api", "folder_paths", "nodes", "node_helpers",
                 "latent_preview", "server", "execution")
ALIASES = {"mm": "comfy.model_management", "folder_paths": "folder_paths"}   # the guard's module views


def internals():
    spec = importlib.util.spec_from_file_location("comfy_internals_under_test", NODES / "comfy_internals.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def uses(path: Path) -> tuple[set[str], set[str], set[str], set[str]]:
    """(absolute imports, get/require names, key names, mm./folder_paths. attribute names) of one node module."""
    imports, names, keys, attributes = set(), set(), set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imports.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            imports.add(node.module)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            literals = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            if node.func.id in ("get", "require"):
                names.update(literals)
            elif node.func.id == "key":
                keys.update(literals)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ALIASES:
            attributes.add(f"{ALIASES[node.value.id]}:{node.attr}")
    return imports, names, keys, attributes


def test_only_the_guard_touches_comfyui():
    for path in NODES.glob("*.py"):
        imports, *_ = uses(path)
        comfy = {m for m in imports if m.split(".")[0] in COMFY_MODULES}
        assert not comfy, f"{path.name} imports {comfy}: reach ComfyUI through nodes/comfy_internals.py"


def test_every_internal_used_is_listed_and_every_listed_one_is_used():
    guard = internals()
    names, keys = set(), set()
    for path in NODES.glob("*.py"):
        if path.name != "comfy_internals.py":
            _, n, k, a = uses(path)
            names |= n | a
            keys |= k
    assert names == set(guard.NAMES) | set(guard.METHODS)
    assert keys == set(guard.KEYS)


def test_the_docs_list_every_internal_with_its_use():
    guard = internals()
    doc = (REPO / "docs" / "comfyui_internals.md").read_text()
    for name in list(guard.NAMES) + list(guard.METHODS):
        module, attribute = name.split(":")
        assert f"`{module}.{attribute}`" in doc, name
    for key, (module, _) in guard.KEYS.items():
        assert re.search(rf"`{key}`.*`{re.escape(module)}`", doc), key
    assert guard.TESTED_WITH in doc


def test_outside_comfyui_the_guard_says_comfy_is_missing(monkeypatch):
    """Without ComfyUI (the unit tests) a node's ComfyUI call is an ImportError of `comfy`, as before the guard."""
    guard = internals()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "comfy" else object())
    with pytest.raises(ModuleNotFoundError) as err:
        guard.get("comfy.sd:load_diffusion_model")
    assert err.value.name == "comfy"
    with pytest.raises(KeyError, match="not listed"):
        guard.key("no_such_key")
