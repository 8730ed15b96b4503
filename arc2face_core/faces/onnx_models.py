"""Loading insightface's ONNX models one file at a time, and checking the execution providers they run on."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

from ..errors import CorruptWeightsError, ProviderError

log = logging.getLogger(__name__)



def provider_names(providers: Sequence[Any]) -> list[str]:
    return [str(p[0] if isinstance(p, (tuple, list)) else p) for p in providers]


def check_providers(providers: Sequence[Any]) -> None:
    import onnxruntime

    names = provider_names(providers)
    available = onnxruntime.get_available_providers()
    if not names or not any(name in available for name in names):
        raise ProviderError(
            f"None of the requested ONNX Runtime providers {names or '[]'} is available in this install "
            f"(available: {available}). Pick one of those, or install the matching onnxruntime package."
        )


def load_onnx(path: Path, providers: Sequence[Any], provider_options: Any) -> Any:
    """``model_zoo.get_model`` on one file, turning load failures into errors that name the file."""
    from insightface import model_zoo

    if path.stat().st_size == 0:
        raise CorruptWeightsError(f"{path} is empty (0 bytes): the download did not finish. Delete it and "
                                  "download it again.")
    try:
        return model_zoo.get_model(os.fspath(path), providers=list(providers), provider_options=provider_options)
    except Exception as exc:
        _explain_load_failure(path, providers, exc)
        raise  # pragma: no cover - _explain_load_failure always raises


def _explain_load_failure(path: Path, providers: Sequence[Any], exc: Exception) -> None:
    """Tell a damaged file (re-download it) from a runtime problem (provider, onnxruntime version)."""
    import onnx

    detail = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
    try:
        onnx.checker.check_model(onnx.load_model(os.fspath(path), load_external_data=False))
    except Exception as parse_exc:
        raise CorruptWeightsError(
            f"{path} is not a readable ONNX model; it is probably truncated or corrupt. Delete it and download it "
            f"again.\nDetail: {detail}"
        ) from parse_exc
    fix = "update onnxruntime" if ctx_id(providers) < 0 else "try the CPU provider, or update onnxruntime"
    raise ProviderError(
        f"ONNX Runtime could not load {path} with providers {provider_names(providers)} although the file itself "
        f"is valid ONNX: {fix}.\nDetail: {detail}"
    ) from exc


def routed_as(model: Any) -> str:
    """What insightface's router made of a file ("detection", "recognition", "landmark_3d_68"...), for messages."""
    task = getattr(model, "taskname", None)
    return f"a {task} model" if task else "no model insightface knows"


def ctx_id(providers: Sequence[Any]) -> int:
    """insightface's convention: -1 means CPU only (prepare() then pins the session to the CPU provider)."""
    return -1 if all(name == "CPUExecutionProvider" for name in provider_names(providers)) else 0


def check_active_provider(model: Any, path: Path, providers: Sequence[Any], strict: bool) -> None:
    """ONNX Runtime silently falls back to the CPU when a GPU provider cannot start (e.g. onnxruntime-gpu 1.31 is a
    CUDA 13 build and finds no CUDA 13 libraries). Say so: an error when the user picked the provider, else a warning."""
    wanted = provider_names(providers)[0]
    session = getattr(model, "session", None)
    active = list(session.get_providers()) if session is not None else [wanted]
    if wanted in active:
        return
    message = (f"ONNX Runtime could not start {wanted} for {path.name} and runs it on {active} instead. "
               "Its GPU libraries are probably missing or of another CUDA version (onnxruntime-gpu's requirements: "
               "https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html#requirements).")
    if strict:
        raise ProviderError(message + " Choose the CPU provider to run anyway.")
    log.warning("Arc2Face: %s", message)
