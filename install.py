"""Post-install repair of the onnxruntime / onnxruntime-gpu clash. ComfyUI-Manager runs it after requirements.txt.

`onnxruntime` (CPU) and `onnxruntime-gpu` are two distributions that write the same `onnxruntime/` folder; whichever
pip wrote last is the build Python imports. insightface depends on the CPU `onnxruntime`, so installing it after
`onnxruntime-gpu` silently replaces the GPU files with CPU ones: `CUDAExecutionProvider` disappears although
`pip list` still shows `onnxruntime-gpu` (docs/onnxruntime.md has the experiment).

What this script does, and nothing more:
  * `onnxruntime-gpu` not installed (the GPU build was not chosen): nothing. It never installs it where it is absent.
  * installed and `CUDAExecutionProvider` is offered by the `onnxruntime` a fresh interpreter imports: nothing.
  * installed but the importable `onnxruntime` is the plain CPU build (or cannot be imported at all): rewrite the GPU
    files with `python -m pip install --force-reinstall --no-deps onnxruntime-gpu==<installed version>`.
It never uninstalls anything (`pip uninstall onnxruntime` would delete files onnxruntime-gpu needs), never touches
torch, and never fails the installation: every outcome exits 0 with an explanation.
Set ARC2FACE_SKIP_ORT_REPAIR=1 to skip it.

Standard library only; it must not import torch, insightface, onnxruntime or the pack itself (the check runs in a
fresh subprocess so this process never loads a half-overwritten native library).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata

TAG = "[Arc2Face install]"

GPU_DIST = "onnxruntime-gpu"
GPU_PROVIDER = "CUDAExecutionProvider"
#: Distributions that also write the `onnxruntime/` folder. If one of them is the importable build, the user chose it
#: (or it was installed on purpose after onnxruntime-gpu): we leave it alone instead of guessing.
OTHER_ACCELERATED_DISTS = (
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-migraphx",
    "onnxruntime-rocm",
    "onnxruntime-qnn",
    "onnxruntime-silicon",
)
PROBE_TIMEOUT_S = 120
PIP_TIMEOUT_S = 1800

# Runs in a fresh interpreter: which build's files are live, its version and its providers, as one JSON line.
_PROBE_CODE = (
    "import json\n"
    "import onnxruntime as ort\n"
    "try:\n"
    "    from onnxruntime.capi import build_and_package_info as b\n"
    "    build = getattr(b, 'package_name', None)\n"
    "except Exception:\n"
    "    build = None\n"
    "print(json.dumps({'providers': list(ort.get_available_providers()), 'version': getattr(ort, '__version__', None),"
    " 'build': build}))\n"
)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_onnxruntime_dists() -> dict[str, str]:
    """{canonical distribution name: version} of every installed distribution named onnxruntime or onnxruntime-*."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name") or ""
        canon = _canonical(name)
        if canon == "onnxruntime" or canon.startswith("onnxruntime-"):
            found.setdefault(canon, dist.version)
    return found


def probe_onnxruntime(python: str = sys.executable, timeout: float = PROBE_TIMEOUT_S) -> dict:
    """Import onnxruntime in a fresh `python` and report what is live.

    Returns {"providers": [...], "version": str, "build": str | None} or {"error": "..."} if the import failed.
    """
    try:
        proc = subprocess.run(
            [python, "-c", _PROBE_CODE], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": f"could not run {python}: {exc}"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]  # the exception line of the traceback
        return {"error": tail[0] if tail else f"exit status {proc.returncode}"}
    try:
        return json.loads(lines[-1])
    except ValueError:
        return {"error": f"unreadable probe output: {lines[-1]!r}"}


def decide_repair(installed: dict[str, str], probe: dict | None) -> tuple[list[str] | None, str]:
    """Pure decision: (pip arguments to run or None, explanation).

    installed: {canonical dist name: version}, as installed_onnxruntime_dists() returns.
    probe: what probe_onnxruntime() returned; None when it was not run (it is only needed if onnxruntime-gpu is
    installed).
    """
    gpu_version = installed.get(GPU_DIST)
    if gpu_version is None:
        return None, f"{GPU_DIST} is not installed; nothing to repair (the GPU build is never installed from here)."
    if probe is None:
        return None, "onnxruntime was not probed; nothing done."
    fix_args = ["install", "--force-reinstall", "--no-deps", f"{GPU_DIST}=={gpu_version}"]
    if "error" in probe:
        return fix_args, (
            f"{GPU_DIST} {gpu_version} is installed but `import onnxruntime` fails ({probe['error']}); "
            f"rewriting the {GPU_DIST} {gpu_version} files."
        )
    providers = list(probe.get("providers") or [])
    if GPU_PROVIDER in providers:
        return None, f"{GPU_DIST} {gpu_version} is live ({GPU_PROVIDER} available); nothing to do."
    build = _canonical(probe.get("build") or "")
    live = f"{probe.get('build') or 'unknown build'} {probe.get('version') or ''}".strip()
    if build in OTHER_ACCELERATED_DISTS:
        return None, (
            f"{GPU_DIST} {gpu_version} is installed but the importable onnxruntime is {live} "
            f"(providers: {', '.join(providers)}). Both write the same onnxruntime/ folder and the last one installed "
            f"wins; leaving your {build} in place. To use CUDA instead run: "
            f"python -m pip install {' '.join(fix_args[1:])}"
        )
    return fix_args, (
        f"{GPU_DIST} {gpu_version} is installed but the importable onnxruntime is {live} without {GPU_PROVIDER} "
        f"(providers: {', '.join(providers) or 'none'}): the CPU package `onnxruntime` (required by insightface) "
        f"overwrote the GPU files. Rewriting the {GPU_DIST} {gpu_version} files; the `onnxruntime` distribution "
        f"stays installed (uninstalling it would delete files both share)."
    )


def _works(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _pip_command(python: str) -> list[str] | None:
    """`python -m pip`; else uv (ComfyUI-Manager's uv mode runs `python -m uv pip`; uv-made venvs may lack pip)."""
    if _works([python, "-m", "pip", "--version"]):
        return [python, "-m", "pip"]
    if _works([python, "-m", "uv", "--version"]):
        return [python, "-m", "uv", "pip"]
    uv = shutil.which("uv")
    if uv:
        return [uv, "pip"]
    return None


def _to_uv(args: list[str], python: str) -> list[str]:
    # uv spells --force-reinstall as --reinstall and needs to be told which interpreter to install into.
    return [("--reinstall" if a == "--force-reinstall" else a) for a in args] + ["--python", python]


def main() -> int:
    if os.environ.get("ARC2FACE_SKIP_ORT_REPAIR", "").strip() not in ("", "0"):
        print(f"{TAG} ARC2FACE_SKIP_ORT_REPAIR is set; onnxruntime check skipped.")
        return 0
    python = sys.executable
    installed = installed_onnxruntime_dists()
    probe = probe_onnxruntime(python) if GPU_DIST in installed else None
    args, why = decide_repair(installed, probe)
    print(f"{TAG} {why}")
    if args is None:
        return 0

    pip = _pip_command(python)
    manual = f'"{python}" -m pip ' + " ".join(args)
    if pip is None:
        print(f"{TAG} Neither pip nor uv is available, so nothing was changed. Run this yourself:\n    {manual}")
        return 0
    cmd = pip + (args if pip[-2:] == ["-m", "pip"] else _to_uv(args, python))
    print(f"{TAG} Running: {' '.join(cmd)}", flush=True)
    try:
        rc = subprocess.run(cmd, timeout=PIP_TIMEOUT_S, check=False).returncode
    except (OSError, subprocess.SubprocessError) as exc:
        rc = f"not run ({exc})"
    after = probe_onnxruntime(python)
    if rc == 0 and GPU_PROVIDER in (after.get("providers") or []):
        print(
            f"{TAG} Repaired: onnxruntime {after.get('version')} now offers {', '.join(after['providers'])}. "
            f"Restart ComfyUI if it is running."
        )
    else:
        state = after.get("error") or f"providers: {', '.join(after.get('providers') or [])}"
        cpu_note = "" if "error" in after else " Face analysis will run on the CPU meanwhile."
        print(
            f"{TAG} The repair did not succeed (pip exit status {rc}; {state}).{cpu_note} "
            f"To get the GPU build back, close ComfyUI and run (do not `pip uninstall` anything):\n    {manual}"
        )
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except Exception as exc:  # never fail the node-pack installation over this optional repair
        print(f"{TAG} onnxruntime check skipped after an unexpected error: {exc!r}")
        code = 0
    sys.exit(code)
