"""Which ONNX Runtime execution providers insightface gets, and a plain-words diagnosis of a broken onnxruntime install.

Background (docs/onnxruntime.md has the experiment): every onnxruntime build on PyPI (`onnxruntime`, `onnxruntime-gpu`,
`onnxruntime-directml`, ...) is a separate distribution that installs into the same `onnxruntime/` package folder.
The build whose files pip wrote last is the one Python imports, whatever `pip list` says. insightface requires the
CPU `onnxruntime`, so installing or upgrading it after `onnxruntime-gpu` silently turns a GPU install into a CPU one,
and `pip uninstall` of either distribution deletes files the other one needs.

No ComfyUI import here; onnxruntime is imported lazily so that a broken install is reported, not raised at import.
"""

from __future__ import annotations

import logging
import platform
import re
import sys
from importlib import metadata
from typing import Mapping, Sequence, Union

from ..errors import InvalidInputError, ProviderError

log = logging.getLogger(__name__)

#: What a user can pick in the node. Only providers ONNX Runtime really has (all appear in
#: onnxruntime.get_all_providers()); AMD GPUs are served by MIGraphX since ONNX Runtime 1.23 removed the ROCm provider.
PROVIDER_CHOICES: tuple[str, ...] = ("auto", "CPU", "CUDA", "MIGraphX", "DirectML", "CoreML", "OpenVINO")

#: Short name -> ONNX Runtime provider name.
PROVIDER_NAMES: dict[str, str] = {
    "CPU": "CPUExecutionProvider",
    "CUDA": "CUDAExecutionProvider",
    "MIGraphX": "MIGraphXExecutionProvider",
    "DirectML": "DmlExecutionProvider",
    "CoreML": "CoreMLExecutionProvider",
    "OpenVINO": "OpenVINOExecutionProvider",
}

#: "auto" takes the first of these that is available, then CPU as fallback. OpenVINO is left out: its default device is
#: the CPU, so it is not a GPU choice. TensorRT (listed by onnxruntime-gpu) is left out: it needs the TensorRT libraries
#: and builds an engine per input shape, which is slow and fragile for a face detector.
AUTO_ORDER: tuple[str, ...] = ("CUDA", "MIGraphX", "DirectML", "CoreML")

# Providers that take a GPU index as "device_id".
_DEVICE_ID_PROVIDERS = frozenset({"CUDA", "MIGraphX", "DirectML"})

#: Accelerated builds on PyPI (canonical distribution name) and the provider(s) each one brings. All of them, and the
#: plain CPU `onnxruntime`, install into the same onnxruntime/ folder.
ACCELERATED_BUILDS: dict[str, tuple[str, ...]] = {
    "onnxruntime-gpu": ("CUDAExecutionProvider",),
    "onnxruntime-directml": ("DmlExecutionProvider",),
    "onnxruntime-openvino": ("OpenVINOExecutionProvider",),
    "onnxruntime-migraphx": ("MIGraphXExecutionProvider",),
    "onnxruntime-rocm": ("ROCMExecutionProvider", "MIGraphXExecutionProvider"),
    "onnxruntime-qnn": ("QNNExecutionProvider",),
}

#: Short choice -> (distribution that brings it, (sys.platform, platform.machine()) pairs PyPI has wheels of it for),
#: for the "install this" hint. CoreML ships in the macOS CPU wheel.
_BUILD_FOR_CHOICE: dict[str, tuple[str, frozenset]] = {
    "CUDA": ("onnxruntime-gpu", frozenset({("linux", "x86_64"), ("linux", "aarch64"), ("win32", "AMD64")})),
    "MIGraphX": ("onnxruntime-migraphx", frozenset({("linux", "x86_64")})),
    "DirectML": ("onnxruntime-directml", frozenset({("win32", "AMD64")})),
    "OpenVINO": ("onnxruntime-openvino", frozenset({("linux", "x86_64"), ("win32", "AMD64")})),
}

Provider = Union[str, tuple[str, dict]]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_onnxruntime_builds() -> dict[str, str]:
    """{canonical distribution name: version} of every installed `onnxruntime` / `onnxruntime-*` distribution."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        canon = _canonical(dist.metadata.get("Name") or "")
        if canon == "onnxruntime" or canon.startswith("onnxruntime-"):
            found.setdefault(canon, dist.version)
    return found


def _probe() -> tuple[list[str] | None, str | None, str | None]:
    """(available providers, live build's package name, import error) of the onnxruntime this process imports."""
    try:
        import onnxruntime as ort

        providers = list(ort.get_available_providers())
    except Exception as exc:  # a half-deleted install raises ImportError or AttributeError
        return None, None, f"{type(exc).__name__}: {exc}"
    try:
        from onnxruntime.capi import build_and_package_info as info

        build = getattr(info, "package_name", None)
    except Exception:
        build = None
    return providers, build, None


def _pip(args: str) -> str:
    return f'"{sys.executable}" -m pip {args}'


def diagnose_onnxruntime(
    installed: Mapping[str, str] | None = None,
    available: Sequence[str] | None = None,
    *,
    live_build: str | None = None,
    import_error: str | None = None,
) -> str | None:
    """Describe what is wrong with the onnxruntime install, with the exact command that fixes it; None when fine.

    installed: {distribution name: version}; default: read with importlib.metadata.
    available: providers of the importable onnxruntime; default: import it in this process.
    live_build: package name of the build whose files are live ("onnxruntime", "onnxruntime-gpu", ...), if known.
    import_error: set instead of `available` to describe an onnxruntime that cannot be imported.
    """
    if installed is None:
        installed = installed_onnxruntime_builds()
    installed = {_canonical(k): v for k, v in installed.items()}
    if available is None and import_error is None:
        available, probed_build, import_error = _probe()
        live_build = live_build or probed_build
    listing = ", ".join(f"{name} {ver}" for name, ver in sorted(installed.items())) or "none"

    if import_error is not None:
        if not installed:
            return (
                f"onnxruntime is not installed ({import_error}). Install it with: {_pip('install onnxruntime-gpu')} "
                f"(NVIDIA GPU, Linux x86_64 or Windows x64) or {_pip('install onnxruntime')}, then restart ComfyUI."
            )
        target = next((d for d in ACCELERATED_BUILDS if d in installed), None) or next(iter(sorted(installed)))
        shared = (
            " These distributions all install into the same onnxruntime/ folder, so uninstalling one of them deletes "
            "files the others need."
            if len(installed) > 1
            else ""
        )
        return (
            f"onnxruntime cannot be imported ({import_error}) although pip lists {listing}.{shared} "
            f"Fix: close ComfyUI and run {_pip(f'install --force-reinstall --no-deps {target}=={installed[target]}')} "
            f"(do not `pip uninstall` any of them)."
        )

    available = list(available or [])
    problems = []
    for dist, providers in ACCELERATED_BUILDS.items():
        if dist not in installed or any(p in available for p in providers):
            continue
        winner = f"the files of {live_build}" if live_build else f"not the files of {dist}"
        others = ", ".join(f"{d} {v}" for d, v in sorted(installed.items()) if d != dist)
        clash = (
            f" {dist} {installed[dist]} and {others} install into the same onnxruntime/ folder and whichever pip wrote "
            f"last is what Python imports; here that is {winner}"
            if others
            else f" Python imports {winner}"
        )
        why = (
            " (insightface requires the CPU package `onnxruntime`, so installing or upgrading it does exactly this)."
            if dist == "onnxruntime-gpu" and "onnxruntime" in installed
            else "."
        )
        problems.append(
            f"{dist} {installed[dist]} is installed, but the onnxruntime Python imports offers only "
            f"{', '.join(available) or 'no providers'}, not {' / '.join(providers)}.{clash}{why} "
            f"Fix: close ComfyUI and run {_pip(f'install --force-reinstall --no-deps {dist}=={installed[dist]}')} "
            f"then start ComfyUI again. Do not run `pip uninstall onnxruntime`: it deletes files {dist} needs too."
        )
    return "\n".join(problems) or None


def _normalise_choice(choice: str) -> str:
    if isinstance(choice, str):
        key = choice.strip().lower()
        for option in PROVIDER_CHOICES:
            if option.lower() == key or PROVIDER_NAMES.get(option, "").lower() == key:
                return option
    raise ProviderError(
        f"Unknown ONNX Runtime provider choice {choice!r}; choose one of: {', '.join(PROVIDER_CHOICES)}."
    )


def _entry(short: str, device_id: int) -> Provider:
    name = PROVIDER_NAMES[short]
    return (name, {"device_id": device_id}) if short in _DEVICE_ID_PROVIDERS else name


def resolve_providers(
    choice: str,
    device_id: int = 0,
    *,
    available: Sequence[str] | None = None,
    installed: Mapping[str, str] | None = None,
) -> list[Provider]:
    """The `providers` list for onnxruntime.InferenceSession / insightface for a node's provider choice.

    "auto": the best available GPU provider (CUDA, MIGraphX, DirectML, CoreML, in that order) then CPU as fallback,
    else CPU only. An explicit choice that is not available raises ProviderError listing what is available and, when an
    install clash explains it, how to fix it. GPU providers come as ("...ExecutionProvider", {"device_id": n}).
    available / installed default to the real onnxruntime and installed distributions (parameters for tests).
    """
    short = _normalise_choice(choice)
    if isinstance(device_id, bool) or not isinstance(device_id, int) or device_id < 0:
        raise InvalidInputError(f"device_id must be a GPU index >= 0, got {device_id!r}.")
    build = None
    if available is None:
        available, build, error = _probe()
        if error is not None:
            raise ProviderError(diagnose_onnxruntime(installed, import_error=error) or f"onnxruntime: {error}")
    available = list(available)
    cpu = PROVIDER_NAMES["CPU"]

    if short == "auto":
        for option in AUTO_ORDER:
            if PROVIDER_NAMES[option] in available:
                return [_entry(option, device_id), cpu]
        problem = diagnose_onnxruntime(installed, available, live_build=build)
        if problem:
            log.warning("Arc2Face: face analysis runs on the CPU. %s", problem)
        return [cpu]

    name = PROVIDER_NAMES[short]
    if name in available:
        return [cpu] if short == "CPU" else [_entry(short, device_id), cpu]

    message = (
        f"The ONNX Runtime provider {short} ({name}) is not available. "
        f"Available providers: {', '.join(available) or 'none'}. Pick one of those (or 'auto')."
    )
    problem = diagnose_onnxruntime(installed, available, live_build=build)
    if problem:
        message += "\n" + problem
    elif short in _BUILD_FOR_CHOICE:
        installed_now = installed if installed is not None else installed_onnxruntime_builds()
        dist, platforms = _BUILD_FOR_CHOICE[short]
        here = (sys.platform, platform.machine())
        if _canonical(dist) not in {_canonical(d) for d in installed_now} and here in platforms:
            message += (
                f"\nTo use {short}, install the {dist} build (it brings the CPU provider too): close ComfyUI and run "
                f"{_pip(f'install {dist}')}"
            )
    raise ProviderError(message)
