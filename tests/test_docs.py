"""Every document, path, section and module the pack names is in the repository, and the node contract page matches
the nodes.

The pack was planned from notes that are not part of it; a docstring citing one of them sends a reader nowhere. What
the code relies on is written in ``docs/`` instead, and this test keeps every reference followable. It scans the pack's
text files for
* document names (``name.md``): a file of that name is in the repository;
* paths into the repository (``docs/...``, ``arc2face_core/...``, ``tests/...``, ...) and relative ``../x.md``
  paths: they exist, inside the repository;
* section pointers (``docs/pose_hints.md, 'The renderer'``): the document has a heading of that name;
* Markdown links (``[text](target#anchor)``): a relative target exists inside the repository and the anchor names
  one of its headings;
* dotted module names (``arc2face_core.x.y``): they lead to a module (what follows may be an attribute).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The pack's own files: what a user installs and a developer reads (not .venv, .comfyui, models/ or out/).
PACK = ("__init__.py", "install.py", "README.md", "pyproject.toml", "requirements.txt", "requirements-dev.txt",
        "arc2face_core", "nodes", "tests", "scripts", "bench", "docs", "workflows", ".ci")
TEXT_SUFFIXES = {".py", ".md", ".txt", ".toml", ".json", ".sh", ".yaml", ".yml", ""}
PATH_ROOTS = ("arc2face_core", "nodes", "tests", "scripts", "bench", "docs", "workflows", ".ci")
# Files that name what does not exist on purpose: this test's own examples, and the made-up packages
# tests/test_layout.py builds to test its import checker (module names only).
NOT_SCANNED = {"tests/test_docs.py"}
MADE_UP_MODULES = {"tests/test_layout.py"}
# Files the pack writes into a user's folder (the dataset report, bench/gpu_check.py's summary), named as such, not
# documents it cites.
WRITTEN_BY_THE_PACK = {"report.md", "gpu_check.md"}

_EDGE = r"(?<![\w./:-])"          # a name starts here, not inside a longer path, URL or dotted name
DOCUMENT = re.compile(_EDGE + r"([\w-]+\.md)\b")
REPO_PATH = re.compile(_EDGE + r"((?:" + "|".join(map(re.escape, PATH_ROOTS)) + r")/[\w./-]*[\w])")
UP_PATH = re.compile(_EDGE + r"((?:\.\./)+[\w./-]*\.md)\b")
SECTION = re.compile(r"([\w./-]*\.md)\)?,\s+(?:section\s+)?['\"]([^'\"]{2,80})['\"]")   # may wrap a line
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
MODULE = re.compile(r"(?<![\w.])(arc2face_core(?:\.\w+)+)")


def pack_files(root: Path) -> list[Path]:
    files = []
    for entry in PACK:
        path = root / entry
        candidates = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        files += [p for p in candidates if p.is_file() and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts]
    return files


def headings(document: Path) -> set[str]:
    return {line.lstrip("#").strip() for line in document.read_text().splitlines() if line.startswith("#")}


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _inside(root: Path, path: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _find(root: Path, name: str, here: Path) -> Path | None:
    """A referenced file: relative to the repository root, or to the citing file's folder; never outside the repo."""
    for base in (root, here.parent):
        path = base / name
        if _inside(root, path) and path.exists():
            return path
    return None


def _module_exists(root: Path, dotted: str) -> bool:
    path = root
    for part in dotted.split("."):
        if (path / part).is_dir():
            path = path / part
        elif (path / f"{part}.py").is_file():
            return True                      # a module: what follows are its attributes
        else:                                # an attribute of a package, defined or re-exported in its __init__
            init = path / "__init__.py"
            return init.is_file() and re.search(rf"\b{part}\b", init.read_text()) is not None
    return True


def broken_references(root: Path) -> list[str]:
    """Every reference in the pack's files that a reader could not follow, as 'file: what'."""
    files = pack_files(root)
    documents = {p.name for p in files if p.suffix == ".md"}
    problems = []
    for file in files:
        rel = file.relative_to(root).as_posix()
        if rel in NOT_SCANNED:
            continue
        text = file.read_text(errors="replace")
        for name in DOCUMENT.findall(text):
            if name not in documents and name not in WRITTEN_BY_THE_PACK:
                problems.append(f"{rel}: cites {name}, which is not in the repository")
        for match in [*REPO_PATH.finditer(text), *UP_PATH.finditer(text)]:
            name, glob = match[1], text[match.end():match.end() + 1] == "*"     # smirk*.py names several files
            if not glob and _find(root, name, file) is None:
                problems.append(f"{rel}: names {name}, which is not in the repository")
        for name, section in SECTION.findall(text):
            section, document = " ".join(section.split()), _find(root, name, file)
            if document is not None and section not in headings(document):
                problems.append(f"{rel}: points to section {section!r} of {name}, which has no such heading")
        if file.suffix == ".md":
            for target in LINK.findall(text):
                if re.match(r"[a-z]+:", target):
                    continue
                name, _, fragment = target.partition("#")
                document = _find(root, name, file) if name else file
                if document is None or not _inside(root, document):
                    problems.append(f"{rel}: links to {target}, which is not in the repository")
                elif fragment and fragment not in {anchor(h) for h in headings(document)}:
                    problems.append(f"{rel}: links to {target}, whose anchor names no heading")
        if rel not in MADE_UP_MODULES:
            for dotted in MODULE.findall(text):
                if not _module_exists(root, dotted):
                    problems.append(f"{rel}: names module {dotted}, which does not exist")
    return problems


def test_every_reference_of_the_pack_can_be_followed():
    assert broken_references(REPO) == []


def test_the_checker_finds_what_a_reader_could_not_follow(tmp_path):
    """A small made-up pack with one reference of each kind that works and one that does not. The design page exists
    beside the repository (as the lead's notes do beside a checkout), which must not count as in it."""
    design_page = "POSE.md"
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / design_page).write_text("# Notes outside the repository\n")
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "docs" / "pose_hints.md").write_text("# Pose hints\n\n## The renderer\n\n[up](../README.md)\n"
                                                 "[gone](gone.md) [here](#the-renderer) [nowhere](#no-such)\n")
    (repo / "README.md").write_text(f"See [the hints](docs/pose_hints.md#the-renderer), not [these](../shared/"
                                    f"{design_page}).\n")
    (repo / "arc2face_core" / "pose").mkdir(parents=True)
    (repo / "arc2face_core" / "__init__.py").write_text("")
    (repo / "arc2face_core" / "pose" / "__init__.py").write_text("from .camera import emoca_placement\n")
    (repo / "arc2face_core" / "pose" / "camera.py").write_text(
        f'"""The decode ({design_page} section 2; docs/pose_hints.md, \'The renderer\'; docs/pose_hints.md,\n'
        f"'Projection'; ../shared/{design_page}; docs/missing.md; arc2face_core/pose/gone.py; tests/x.py).\n"
        'Calls arc2face_core.pose.camera.emoca_placement, arc2face_core.pose.emoca_placement and\n'
        'arc2face_core.headless.cli; see README.md and docs/pose_hints.md, "The\nrenderer"."""\n')
    camera = "arc2face_core/pose/camera.py"
    assert sorted(broken_references(repo)) == sorted([
        f"{camera}: cites {design_page}, which is not in the repository",
        f"{camera}: names docs/missing.md, which is not in the repository",
        f"{camera}: names arc2face_core/pose/gone.py, which is not in the repository",
        f"{camera}: names tests/x.py, which is not in the repository",
        f"{camera}: names ../shared/{design_page}, which is not in the repository",
        f"{camera}: points to section 'Projection' of docs/pose_hints.md, which has no such heading",
        f"{camera}: names module arc2face_core.headless.cli, which does not exist",
        f"README.md: names ../shared/{design_page}, which is not in the repository",
        f"README.md: links to ../shared/{design_page}, which is not in the repository",
        "docs/pose_hints.md: cites gone.md, which is not in the repository",
        "docs/pose_hints.md: links to gone.md, which is not in the repository",
        "docs/pose_hints.md: links to #no-such, whose anchor names no heading",
    ])


def test_the_docs_are_linked_from_the_readme():
    readme = (REPO / "README.md").read_text()
    for document in sorted((REPO / "docs").glob("*.md")):
        assert f"](docs/{document.name})" in readme, f"README.md does not link docs/{document.name}"


NODE_ROW = re.compile(r"^\| `(Arc2Face\w+)` \| ([^|]+) \| ([^|]*) \| ([^|]*) \| ([^|]*) \|$", re.M)


def _names(cell: str) -> list[str]:
    return re.findall(r"`(\w+)`", cell)


@pytest.fixture(scope="module")
def contract_rows() -> dict[str, tuple]:
    text = (REPO / "docs" / "node_contract.md").read_text()
    return {m[0]: (m[1].strip(), _names(m[2]), _names(m[3]), _names(m[4])) for m in NODE_ROW.findall(text)}


def test_the_node_contract_page_lists_every_node_as_served(contract_rows):
    """docs/node_contract.md against the definitions a real ComfyUI serves (tests/data/object_info.json)."""
    snapshot = json.loads((REPO / "tests" / "data" / "object_info.json").read_text())
    served = {k: v for k, v in snapshot.items() if v["category"] == "Arc2Face"}
    assert sorted(contract_rows) == sorted(served)
    for node_id, info in served.items():
        order = info["input_order"]
        assert contract_rows[node_id] == (info["display_name"], order.get("required", []), order.get("optional", []),
                                          info["output_name"]), node_id
