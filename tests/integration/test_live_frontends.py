"""The shipped workflows in ComfyUI's web UI, in a real browser: the snapshot's own frontend (1.27.10) and the newest
one on PyPI (1.58.1, served by the same 0.3.64 server with ``--front-end-root``).

* ComfyUI's template listing finds every workflow in example_workflows/ and serves its thumbnail; 1.58.1's template
  browser shows the pack's group with every workflow and fetches the thumbnails of the cards in view.
* Every workflow opens cleanly in both frontends on the session's install (files present): no unknown node, no
  dialog or toast, every widget value kept and every choice valid, no page error.
* On an install without model files, opening a workflow lists exactly the files the frontends can offer: both take a
  node's ``properties.models`` entry only when its name is one of that node's widget values, so the VAE (and, in the
  LCM workflow, the LCM-LoRA) are listed with their folders, and none of the files the pack's own loaders find by
  themselves (docs/comfyui_frontend.md says why).

Four servers: the session's (1.27.10, files present), one with 1.58.1 on the same install, and one per frontend on
an empty install (``--base-directory``, the pack linked, the test photos in its input folder).
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest

from browser import browser_page
from fixtures_comfyui import link_pack, start_server, stop_server, write_inputs

pytestmark = pytest.mark.comfyui

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.stem for p in (REPO / "example_workflows").glob("*.json"))
PACK = "arc2face"   # the folder the fixtures link the pack as: ComfyUI names the template group after it
NEW_FRONTEND = (REPO / "tests" / "requirements-frontend.txt").read_text().split("==")[-1].split()[0]
VAE = ("vae", "sd15_vae.safetensors")
LCM_LORA = ("loras", "lcm-lora-sdv1-5.safetensors")


def workflow(name: str) -> dict:
    return json.loads((REPO / "example_workflows" / f"{name}.json").read_text())


def pinned_frontend(comfy_install: Path) -> str:
    """The frontend version the snapshot's requirements.txt pins (what its server serves by default)."""
    for line in (comfy_install / "ComfyUI" / "requirements.txt").read_text().splitlines():
        if line.startswith("comfyui-frontend-package=="):
            return line.split("==")[1].strip()
    raise AssertionError("ComfyUI's requirements.txt pins no comfyui-frontend-package")


def new_frontend_root(comfy_install: Path) -> Path:
    """Where .ci/run installs the newer frontend: DIR/frontends/<version> (pip --target)."""
    root = Path(os.environ.get("ARC2FACE_FRONTEND_ROOT", comfy_install / "frontends" / NEW_FRONTEND))
    static = root / "comfyui_frontend_package" / "static"
    if not (static / "index.html").is_file():
        pytest.skip(f"no frontend {NEW_FRONTEND} in {root}: pip install --no-deps --target {root} "
                    "-r tests/requirements-frontend.txt (as .ci/run does)")
    return static


def skip_first_run_dialog(client) -> None:
    """The template browser opens on a first visit; a user who has been here before does not see it."""
    request = urllib.request.Request(f"{client.url}/settings", data=json.dumps({"Comfy.TutorialCompleted": True})
                                     .encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200


@pytest.fixture(scope="module")
def servers(comfy, comfy_install, tmp_path_factory):
    """{(frontend, "full" | "empty"): client}; the session's server is (old, full)."""
    old = pinned_frontend(comfy_install)
    static = new_frontend_root(comfy_install)
    processes, clients = [], {(old, "full"): comfy}
    try:
        process, clients[(NEW_FRONTEND, "full")] = start_server(
            comfy_install, comfy_install / "arc2face_frontend_new.log", ("--front-end-root", str(static)))
        processes.append(process)
        for version, extra in ((old, ()), (NEW_FRONTEND, ("--front-end-root", str(static)))):
            base = tmp_path_factory.mktemp(f"empty_install_{version}")
            (base / "custom_nodes").mkdir()
            link_pack(base / "custom_nodes")
            write_inputs(base / "input")
            process, clients[(version, "empty")] = start_server(
                comfy_install, base / "server.log", ("--base-directory", str(base), *extra))
            processes.append(process)
        for client in clients.values():
            skip_first_run_dialog(client)
        yield old, clients
    finally:
        for process in processes:
            stop_server(process)


def test_comfyui_lists_the_templates_and_serves_their_thumbnails(comfy):
    """GET /workflow_templates is ComfyUI's own listing; both frontends then fetch <name>.json and <name>.jpg."""
    assert sorted(comfy.get("/workflow_templates")[PACK]) == SHIPPED
    for name in SHIPPED:
        for suffix, kind in ((".json", "application/json"), (".jpg", "image/jpeg")):
            with urllib.request.urlopen(f"{comfy.url}/api/workflow_templates/{PACK}/{name}{suffix}") as response:
                assert response.status == 200 and response.headers["Content-Type"] == kind
                assert response.read() == (REPO / "example_workflows" / f"{name}{suffix}").read_bytes()


def test_the_template_browser_shows_every_template_with_its_thumbnail(servers):
    """In 1.58.1 (1.27.10 renders only the cards in view, so its page text cannot show all 16; it builds the same
    thumbnail URLs, served above)."""
    _, clients = servers
    with browser_page(clients[(NEW_FRONTEND, "full")].url) as page:
        text, thumbnails = page.template_browser(PACK)
    assert [name for name in SHIPPED if name not in text] == []
    assert thumbnails, "no thumbnail was requested"
    for url, status, kind in thumbnails:
        assert url.rsplit("/", 1)[1][:-len(".jpg")] in SHIPPED and (status, kind) == (200, "image/jpeg"), url


@pytest.mark.parametrize("which", ["old", "new"])
def test_every_workflow_opens_cleanly(servers, which):
    old, clients = servers
    version = old if which == "old" else NEW_FRONTEND
    with browser_page(clients[(version, "full")].url) as page:
        assert page.frontend_version() == version
        for name in SHIPPED:
            assert page.open_workflow(workflow(name)) == [], name
            page.page.wait_for_timeout(500)   # a missing-model check runs on after the load resolves
            assert page.dialogs() == [], name
            assert page.errors == [], name
            page.clear()
        # the check can fail: an unknown node type and a value outside a choice list are both reported
        broken = workflow("arc2face_basic")
        sampler = next(n for n in broken["nodes"] if n["type"] == "Arc2FaceSampler")
        sampler["widgets_values"][4] = "no_such_sampler"
        next(n for n in broken["nodes"] if n["type"] == "Arc2FaceEncoder")["type"] = "Arc2FaceNoSuchNode"
        problems = " ".join(page.open_workflow(broken))
        assert "Arc2FaceNoSuchNode is not a known node" in problems and '"no_such_sampler" is not a choice' in problems


@pytest.mark.parametrize("which", ["old", "new"])
def test_an_empty_install_is_offered_exactly_the_files_the_frontend_can_offer(servers, which):
    """Both frontends list a node's model only when a widget of that node names it: the VAE everywhere, the
    LCM-LoRA in the LCM workflow; never the Arc2Face files the pack's loaders find without a file widget."""
    old, clients = servers
    version = old if which == "old" else NEW_FRONTEND
    with browser_page(clients[(version, "empty")].url) as page:
        for name in SHIPPED:
            problems = page.open_workflow(workflow(name))
            # on an empty install the stock loaders' file choices are empty lists: their values are "missing"
            assert all("is not a choice" in p and ("vae_name" in p or "lora_name" in p) for p in problems), problems
            listed = page.missing_models_old() if which == "old" else page.missing_models_new()
            assert listed == ({VAE, LCM_LORA} if name == "arc2face_lcm" else {VAE}), name
            assert page.errors == [], name
            page.clear()
