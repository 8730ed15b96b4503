"""gpu_check, part 1: every shipped workflow and every Arc2Face node in a real ComfyUI server.

The server runs from a ComfyUI checkout (``--comfyui``) with ``--base-directory`` set to a folder of this check, so
nothing of the checkout changes: ``<base>/models`` (the random models), ``<base>/input`` (the test photos),
``<base>/custom_nodes/arc2face`` (a link to this repository), ``output``, ``temp`` and ``user``. On CUDA the Arc2Face
Model Loader is asked for fp16 weights; what ComfyUI reports about devices and dtypes (its log) is recorded, and on
CUDA a UNet that did not run in fp16 fails the check. Each workflow runs as the web UI would send it, at its own
size and step count on a GPU, at ``size`` px and ``steps`` steps otherwise; every saved image must be a picture
(finite, not one flat colour). Nodes no workflow uses are run by two extra prompts; a node of the pack that no
prompt ran fails the check.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "example_workflows"   # the shipped workflows (ComfyUI's template folder)
sys.path[:0] = [str(REPO / "tests")]

from builders.ui_workflows import FILE_COMBOS, check_ui_workflow, ui_to_api, widgets  # noqa: E402

SAMPLERS = ("Arc2FaceSampler", "KSampler", "EmptyLatentImage")
WIDE = {"arc2face_two_people": 2}   # width / height of workflows that are not square


class Server:
    """A ComfyUI server of this check (started here, or one already running at ``url``)."""

    def __init__(self, url: str, base: Path, process: subprocess.Popen | None = None, log: Path | None = None):
        self.url, self.base, self.process, self.log = url, base, process, log

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return json.load(response)

    def run(self, prompt: dict, timeout: float = 900) -> dict:
        """POST ``prompt`` and wait for it; returns its /history entry (raises with ComfyUI's error)."""
        request = urllib.request.Request(self.url + "/prompt", headers={"Content-Type": "application/json"},
                                         data=json.dumps({"prompt": prompt, "client_id": str(uuid.uuid4())}).encode())
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                prompt_id = json.load(response)["prompt_id"]
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"ComfyUI refused the prompt ({err.code}): {err.read().decode()[:3000]}") from None
        deadline = time.time() + timeout
        while time.time() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            status = (entry or {}).get("status", {}).get("status_str")
            if status == "success":
                return entry
            if status == "error":
                raise RuntimeError(_error_of(entry))
            time.sleep(0.1)
        raise RuntimeError(f"prompt {prompt_id} did not finish in {timeout} s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _error_of(entry: dict) -> str:
    for kind, data in entry["status"].get("messages", []):
        if kind == "execution_error":
            return f"{data.get('node_type')}: {data.get('exception_type')}: {data.get('exception_message')}"
    return "unknown error"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_base(base: Path, models: Path) -> None:
    """The server's base folder: the models (a link), the test photos, this repository as a custom node pack."""
    from fixtures_comfyui import write_inputs

    for name in ("output", "temp", "user", "custom_nodes"):
        (base / name).mkdir(parents=True, exist_ok=True)
    for link, target in ((base / "models", models), (base / "custom_nodes" / "arc2face", REPO)):
        if link.is_symlink() or link.exists():
            if link.resolve() == target.resolve():
                continue
            link.unlink()
        link.symlink_to(target.resolve(), target_is_directory=True)
    write_inputs(base / "input")


def start_server(comfyui: Path, python: str, base: Path, cpu: bool, extra_args: list[str]) -> Server:
    port = _free_port()
    log = base / "comfyui.log"
    command = [python, str(comfyui / "main.py"), "--base-directory", str(base), "--listen", "127.0.0.1", "--port",
               str(port), "--disable-auto-launch", *(["--cpu"] if cpu else []), *extra_args]
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=comfyui, stdout=out, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1"))
    server = Server(f"http://127.0.0.1:{port}", base, process, log)
    deadline = time.time() + 600
    while True:
        try:
            server.get("/object_info/LoadImage")
            break
        except (urllib.error.URLError, ConnectionError, OSError):
            if process.poll() is not None or time.time() > deadline:
                server.stop()
                raise RuntimeError(f"ComfyUI did not start ({' '.join(command)}):\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
    if "IMPORT FAILED" in log.read_text():
        server.stop()
        raise RuntimeError(f"the pack failed to import in ComfyUI:\n{log.read_text()[-3000:]}")
    return server


def workflow_prompt(name: str, object_info: dict, gpu: bool, size: int, steps: int) -> dict:
    workflow = json.loads((WORKFLOWS / f"{name}.json").read_text())
    problems = check_ui_workflow(workflow, object_info, FILE_COMBOS)
    if problems:
        raise RuntimeError(f"{name} does not fit this ComfyUI's nodes: {problems[:3]}")
    prompt = ui_to_api(workflow, object_info)
    for node in prompt.values():
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "Arc2FaceModelLoader" and gpu:
            inputs["weight_dtype"] = "fp16"
        if kind == "Arc2FaceFilterByIdentity":   # random models: let every image through to the save node
            inputs["threshold"] = -1.0
        if not gpu:
            if kind in SAMPLERS:
                inputs.update({k: v for k, v in (("width", size * WIDE.get(name, 1)), ("height", size),
                                                 ("steps", steps)) if k in inputs})
            if kind == "Arc2FaceAlignFace":   # the reference photo at the generated size
                inputs["size"] = size
    return prompt


def check_pictures(server: Server, entry: dict, prompt: dict) -> int:
    """Every image a SaveImage node wrote is a picture; returns how many were saved."""
    import numpy as np
    from PIL import Image

    saved = 0
    for node_id, node in prompt.items():
        if node["class_type"] != "SaveImage":
            continue
        images = entry["outputs"].get(node_id, {}).get("images", [])
        if not images:
            raise RuntimeError(f"SaveImage node {node_id} saved nothing")
        for image in images:
            pixels = np.asarray(Image.open(server.base / "output" / image["subfolder"] / image["filename"]))
            if pixels.std() < 1.0:
                raise RuntimeError(f"{image['filename']} is one flat colour: not a picture")
            saved += 1
    return saved


def node(object_info: dict, kind: str, **given) -> dict:
    """An API node with every widget at its default except ``given``."""
    inputs = {w.name: w.options.get("default", w.choices[0] if w.choices else None)
              for w in widgets(object_info[kind]) if w.kind not in ("CONTROL", "UPLOAD")}
    inputs.update(given)
    return {"class_type": kind, "inputs": inputs}


def extra_prompts(object_info: dict, gpu: bool, size: int, steps: int, tag: str):
    """The nodes no workflow uses: random identities blended, saved, loaded again; expressions blended."""
    dtype = "fp16" if gpu else "auto"
    size, steps = (512, 25) if gpu else (size, steps)
    sampling = dict(seed=1, steps=steps, cfg=3.0, sampler_name="dpmpp_2m", scheduler="sgm_uniform", width=size,
                    height=size, images_per_id=2)
    first = {
        "1": node(object_info, "Arc2FaceModelLoader", weight_dtype=dtype),
        "2": node(object_info, "Arc2FaceRandomIdentity", count=2, seed=3),
        "3": node(object_info, "Arc2FaceRandomIdentity", count=2, seed=4),
        "4": node(object_info, "Arc2FaceEmbeddingBlend", embeds_a=["2", 0], embeds_b=["3", 0], weight=0.5),
        "5": node(object_info, "Arc2FaceSaveEmbeddings", embeds=["4", 0], filename_prefix=f"gpu_check/ids_{tag}"),
        "6": node(object_info, "Arc2FaceEncoder", encoder=["1", 1], embeds=["4", 0]),
        "7": node(object_info, "Arc2FaceExpressionAdapterLoader"),
        "8": node(object_info, "Arc2FaceExpression", jaw_open=0.4),
        "9": node(object_info, "Arc2FaceExpression", coefficients="1.5, -1, 0.5"),
        "10": node(object_info, "Arc2FaceExpressionBlend", expression_a=["8", 0], expression_b=["9", 0]),
        "11": node(object_info, "Arc2FaceExpressionAdapter", model=["1", 0], adapter=["7", 0],
                   expression=["10", 0]),
        "12": node(object_info, "Arc2FaceSampler", model=["11", 0], positive=["6", 0], negative=["6", 1],
                   **sampling),
        "13": node(object_info, "VAELoader", vae_name="sd15_vae.safetensors"),
        "14": node(object_info, "VAEDecode", samples=["12", 0], vae=["13", 0]),
        "15": node(object_info, "SaveImage", images=["14", 0], filename_prefix=f"gpu_check/nodes_{tag}"),
    }

    def second(saved: str) -> dict:
        return {
            "1": first["1"], "13": first["13"],
            "2": node(object_info, "Arc2FaceLoadEmbeddings", embeddings=saved),
            "6": node(object_info, "Arc2FaceEncoder", encoder=["1", 1], embeds=["2", 0]),
            "12": node(object_info, "Arc2FaceSampler", model=["1", 0], positive=["6", 0], negative=["6", 1],
                       **dict(sampling, images_per_id=1)),
            "14": node(object_info, "VAEDecode", samples=["12", 0], vae=["13", 0]),
            "15": node(object_info, "SaveImage", images=["14", 0], filename_prefix=f"gpu_check/loaded_{tag}"),
        }
    return first, second


def shipped_workflows() -> list[str]:
    return sorted(p.stem for p in WORKFLOWS.glob("*.json"))


def run_comfyui(server: Server, gpu: bool, size: int, steps: int, log, only: Optional[list[str]] = None) -> dict:
    """Every workflow (or those in ``only``) and the extra prompts; returns the per-workflow results and what ComfyUI
    reported. Whether every node of the pack ran is checked when every workflow ran."""
    object_info = server.get("/object_info")
    ours = sorted(k for k, v in object_info.items() if v.get("category") == "Arc2Face")
    ran: set[str] = set()
    results: dict = {"workflows": {}, "failures": []}
    tag = uuid.uuid4().hex[:8]
    names = shipped_workflows() if only is None else sorted(only)
    for name in names:
        start = time.perf_counter()
        try:
            prompt = workflow_prompt(name, object_info, gpu, size, steps)
            saved = check_pictures(server, server.run(prompt), prompt)
            ran |= {n["class_type"] for n in prompt.values()}
            results["workflows"][name] = {"ok": True, "images": saved, "seconds": round(time.perf_counter() - start,
                                                                                        2)}
        except Exception as exc:  # noqa: BLE001  (every failure is reported, the others still run)
            results["workflows"][name] = {"ok": False, "error": str(exc)[-2000:]}
            results["failures"].append(f"workflow {name}: {str(exc)[-500:]}")
        log(f"  workflow {name}: {'ok' if results['workflows'][name]['ok'] else 'FAILED'}")
    first, second = extra_prompts(object_info, gpu, size, steps, tag)
    try:
        entry = server.run(first)
        check_pictures(server, entry, first)
        (saved,) = entry["outputs"]["5"]["embeddings"]
        name = f"{saved['subfolder']}/{saved['filename']} [output]".lstrip("/")
        loaded = second(name)
        check_pictures(server, server.run(loaded), loaded)
        ran |= {n["class_type"] for n in list(first.values()) + list(loaded.values())}
        results["extra_prompts"] = {"ok": True}
    except Exception as exc:  # noqa: BLE001
        results["extra_prompts"] = {"ok": False, "error": str(exc)[-2000:]}
        results["failures"].append(f"extra prompts: {str(exc)[-500:]}")
    log(f"  nodes outside the workflows: {'ok' if results['extra_prompts']['ok'] else 'FAILED'}")
    every_workflow = names == shipped_workflows()
    results["nodes_not_run"] = [n for n in ours if n not in ran] if every_workflow else None
    if results["nodes_not_run"]:
        results["failures"].append(f"nodes no prompt ran: {results['nodes_not_run']}")
    results["nodes"] = len(ours)
    results["reported"] = reported_devices(server)
    if gpu and not any("float16" in line for line in results["reported"].get("model weight dtype", [])):
        results["failures"].append(f"the UNet did not run in fp16 on the GPU: {results['reported']}")
    return results


def reported_devices(server: Server) -> dict:
    """What ComfyUI's log says about devices and dtypes (only for a server this check started)."""
    if server.log is None or not server.log.is_file():
        return {}
    text = server.log.read_text(errors="replace")
    found: dict[str, list[str]] = {}
    for key, pattern in (("device", r"^Device: (.+)$"), ("vram", r"^Total VRAM (.+)$"),
                         ("model weight dtype", r"model weight dtype (.+)$"), ("vae", r"^VAE load device: (.+)$"),
                         ("pytorch", r"^pytorch version: (.+)$")):
        found[key] = sorted(set(re.findall(pattern, text, flags=re.MULTILINE)))
    return found
