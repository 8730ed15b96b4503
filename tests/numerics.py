"""Comparing results computed in a low-precision dtype: distances in units in the last place of that dtype."""

from __future__ import annotations

import torch


def ulps(ours: torch.Tensor, reference: torch.Tensor, dtype: torch.dtype) -> float:
    """The largest difference between ``ours`` and ``reference`` in units in the last place of ``dtype`` at each
    reference value (at least the unit at 1.0, so values near zero do not blow the ratio up).

    Half-precision code checked against the same maths in the same dtype should be within about one unit; the
    float32 maths is typically several units away, so a check in these units tells the two apart, where an absolute
    tolerance wide enough for half precision would also pass a wrong dtype path.
    """
    reference = reference.float()
    spacing = torch.finfo(dtype).eps * torch.exp2(torch.floor(torch.log2(reference.abs().clamp_min(1.0))))
    return float(((ours.float() - reference).abs() / spacing).max())
