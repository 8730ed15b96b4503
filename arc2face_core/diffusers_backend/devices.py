"""The torch device and dtype of a headless run, from the command line's names (``auto``, ``cpu``, ``cuda:1``...)."""

from __future__ import annotations

import torch

from ..errors import InvalidInputError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """``auto`` picks CUDA when torch sees a GPU; dtype ``auto`` is fp16 on a GPU (as the reference) and fp32 on
    the CPU."""
    name = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    try:
        resolved = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(f"--device {device!r} is not a torch device ({exc})") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("--device cuda was asked for, but this torch install sees no CUDA GPU: use --device "
                                "cpu")
    if dtype == "auto":
        return resolved, torch.float16 if resolved.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise InvalidInputError(f"--dtype must be auto or one of {sorted(DTYPES)}, got {dtype!r}")
    return resolved, DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in DTYPES.items() if value == dtype)
