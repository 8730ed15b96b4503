"""pyproject.toml as the Comfy Registry reads it, and the workflow that publishes the pack there.

The rules are the registry's specification (docs.comfy.org, registry/specifications): [project] name (< 100
characters; letters, digits, '-', '_', '.'; no two special characters in a row; starts with a letter; without
"ComfyUI"), a three-part semantic version, a licence file, [project.urls] Repository; [tool.comfy] PublisherId,
DisplayName, Icon (a URL to an SVG, PNG, JPG or GIF of at most 800 x 400 px) and requires-comfyui (a version
specifier). The publishing workflow is the registry's documented GitHub route (publishing docs, "Github Actions").
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
META = tomllib.loads((REPO / "pyproject.toml").read_text())
WORKFLOW = REPO / ".github" / "workflows" / "publish_action.yml"
TESTED_COMFYUI = "0.3.64"


def registry_name_problems(name: str, node_id: bool = True) -> list[str]:
    """The specification's rules for a node id (``node_id``: also its advice to leave out "ComfyUI"), as problems."""
    problems = []
    if len(name) >= 100:
        problems.append("100 characters or more")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        problems.append("characters other than letters, digits, '-', '_', '.'")
    if re.search(r"[._-]{2}", name):
        problems.append("consecutive special characters")
    if not name[:1].isalpha():
        problems.append("does not start with a letter")
    if node_id and "comfyui" in name.lower():
        problems.append("includes ComfyUI")
    return problems


def test_the_name_rules_can_fail():
    assert registry_name_problems("image-processor") == []
    assert registry_name_problems("ComfyUI-enhancer") == ["includes ComfyUI"]
    assert registry_name_problems("123-tool") == ["does not start with a letter"]
    assert registry_name_problems("a--b") == ["consecutive special characters"]
    assert "characters other than letters, digits, '-', '_', '.'" in registry_name_problems("a b")


def test_project_section():
    project = META["project"]
    assert registry_name_problems(project["name"]) == []
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"]), "X.Y.Z, as the registry requires"
    assert project["description"].strip()
    assert (REPO / project["license"]["file"]).is_file()
    repository = project["urls"]["Repository"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repository)
    assert all(url.startswith(repository) for url in project["urls"].values())


def test_tool_comfy_section():
    comfy = META["tool"]["comfy"]
    assert comfy["PublisherId"] and registry_name_problems(comfy["PublisherId"], node_id=False) == []
    assert comfy["DisplayName"] == "Arc2Face"
    specifier = SpecifierSet(comfy["requires-comfyui"])
    assert Version(TESTED_COMFYUI) in specifier and Version("0.3.63") not in specifier


def test_the_icon_is_a_file_of_this_repository_within_the_registry_limits():
    """The Icon URL serves this repository's file (raw.githubusercontent.com of the Repository, branch main)."""
    icon = META["tool"]["comfy"]["Icon"]
    owner_repo = META["project"]["urls"]["Repository"].removeprefix("https://github.com/")
    prefix = f"https://raw.githubusercontent.com/{owner_repo}/main/"
    assert icon.startswith(prefix), icon
    path = REPO / icon.removeprefix(prefix)
    assert path.suffix.lower() in (".svg", ".png", ".jpg", ".jpeg", ".gif") and path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width <= 800 and image.height <= 400


def _publish_workflow() -> dict:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))   # YAML 1.1 reads the key `on` as true
    return workflow


def test_the_publishing_workflow_is_the_registrys_route():
    workflow = _publish_workflow()
    assert workflow["on"]["push"] == {"branches": ["main"], "paths": ["pyproject.toml"]}
    steps = workflow["jobs"]["publish-node"]["steps"]
    publish = next(s for s in steps if s.get("uses", "").startswith("Comfy-Org/publish-node-action@"))
    assert publish["with"] == {"personal_access_token": "${{ secrets.REGISTRY_ACCESS_TOKEN }}"}
    assert "steps.version.outputs.changed == 'true'" in publish["if"]
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] >= 2   # the version check reads the previous commit


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.mark.parametrize("new_version, changed", [("0.1.0", "false"), ("0.2.0", "true")])
def test_the_version_check_publishes_only_on_a_version_change(tmp_path, new_version, changed):
    """The workflow's own check, run in a git repository whose last commit edits pyproject.toml."""
    script = next(s["run"] for s in _publish_workflow()["jobs"]["publish-node"]["steps"]
                  if s.get("id") == "version")
    _git(tmp_path, "init", "-q")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "0.1.0"\n')
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "one")
    (tmp_path / "pyproject.toml").write_text(f'[project]\nname = "x"\nversion = "{new_version}"\n'
                                             'description = "edited"\n')
    _git(tmp_path, "commit", "-q", "-am", "two")
    output = tmp_path / "github_output"
    subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, check=True, capture_output=True,
                   env=dict(os.environ, GITHUB_OUTPUT=str(output)))
    assert output.read_text() == f"changed={changed}\n"
