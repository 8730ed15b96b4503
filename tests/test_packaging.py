"""Packaging for ComfyUI-Manager and the registry: metadata, and requirement files that cannot drift apart."""

from __future__ import annotations

from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


def requirement_lines(path: Path) -> list[Requirement]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def test_pyproject_metadata():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    project, comfy = meta["project"], meta["tool"]["comfy"]
    assert "comfyui" not in project["name"].lower()
    assert Version(project["version"]).release and len(project["version"].split(".")) == 3
    assert project["urls"]["Repository"].startswith("https://github.com/")
    assert {"PublisherId", "DisplayName", "Icon"} <= set(comfy)


def test_dev_requirements_cover_the_runtime_ones():
    """The suite runs on what users install, with the CPU onnxruntime in place of the CUDA build."""
    runtime = {r.name.lower() for r in requirement_lines(REPO / "requirements.txt")} - {"onnxruntime-gpu"}
    dev = {r.name.lower() for r in requirement_lines(REPO / "requirements-dev.txt")}
    assert runtime <= dev, runtime - dev
    assert "onnxruntime-gpu" not in dev and "pytest" in dev


def test_the_licence_file_is_what_pyproject_points_at():
    """The Comfy Registry reads the licence from the file pyproject names; the file must exist and be MIT's text."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["project"]["license"] == {"file": "LICENSE"}
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text
def test_ray_is_an_optional_extra():
    """Datasets on Ray: an extra for the command line (and in the test environment), never a node-pack requirement."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = {r.name.lower() for r in map(Requirement, meta["project"]["optional-dependencies"]["ray"])}
    assert extras == {"ray"}
    assert "ray" not in {Requirement(d).name.lower() for d in meta["project"]["dependencies"]}
    assert "ray" not in {r.name.lower() for r in requirement_lines(REPO / "requirements.txt")}
    assert "ray" in {r.name.lower() for r in requirement_lines(REPO / "requirements-dev.txt")}
