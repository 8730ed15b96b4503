"""FLAME 2020 parameters of faces, as SMIRK regresses them from a photo: what the pose hint and the Expression Adapter
are built from.

One row per face. ``shape`` comes from the identity photo, everything else from the pose/expression reference, as the
reference demo combines them (docs/pose_hints.md, 'From two photos to a hint'). ``crop`` says how the photo was seen:
the 3x3 similarity from the FFHQ-aligned 512 frame to SMIRK's 224 crop (the camera's ``[s, tx, ty]`` lives in that
crop's NDC); ``None`` means no photo (angles typed by hand): the renderer then places the head as FFHQ alignment would.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from ..errors import InvalidInputError
from ..expression.vectors import EXPRESSION_DIM, N_EXPRESSION, N_EYELID, N_JAW

N_SHAPE = 300          # SMIRK's shape encoder (FLAME 2020's first 300 identity components)
N_POSE = 3             # global head rotation, axis-angle (radians)
N_CAMERA = 3           # orthographic camera: scale, tx, ty (in the 224 crop's NDC)

_WIDTHS = {"shape": N_SHAPE, "expression": N_EXPRESSION, "eyelids": N_EYELID, "jaw": N_JAW, "pose": N_POSE,
           "camera": N_CAMERA}


@dataclass(frozen=True)
class FaceParameters:
    """A batch of faces' FLAME parameters (float32 CPU tensors, [N, width] each)."""

    shape: torch.Tensor        # [N, 300] identity shape coefficients
    expression: torch.Tensor   # [N, 50] expression coefficients (units of the PCA standard deviation)
    eyelids: torch.Tensor      # [N, 2] SMIRK's eyelid blendshape weights (left, right), 0..1
    jaw: torch.Tensor          # [N, 3] jaw rotation, axis-angle (radians)
    pose: torch.Tensor         # [N, 3] global head rotation, axis-angle (radians)
    camera: torch.Tensor       # [N, 3] orthographic camera [s, tx, ty]
    crop: Optional[torch.Tensor] = None   # [N, 3, 3] aligned-512 frame -> SMIRK 224 crop; None: no photo

    def __post_init__(self) -> None:
        count = None
        for name, width in _WIDTHS.items():
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor) or value.ndim != 2 or value.shape[1] != width:
                shown = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise InvalidInputError(f"FLAME {name} must be a tensor [N, {width}], got {shown}")
            if count is None:
                count = value.shape[0]
            if value.shape[0] != count or count == 0:
                raise InvalidInputError(f"FLAME parameters must all have the same number of faces (>= 1); {name} "
                                        f"has {value.shape[0]}, shape has {count}")
            if not torch.isfinite(value).all():
                raise InvalidInputError(f"FLAME {name} contains NaN or infinite values")
        if self.crop is not None and (not isinstance(self.crop, torch.Tensor) or
                                      tuple(self.crop.shape) != (count, 3, 3)):
            raise InvalidInputError(f"FLAME crop transforms must be [N, 3, 3] with N = {count}")

    def __len__(self) -> int:
        return self.shape.shape[0]

    def expression_vector(self) -> torch.Tensor:
        """The Expression Adapter's [N, 55] input: expression 50, eyelids 2, jaw 3 (SMIRK's order)."""
        vector = torch.cat([self.expression, self.eyelids, self.jaw], dim=1)
        assert vector.shape[1] == EXPRESSION_DIM
        return vector

    def with_shape_of(self, identity: "FaceParameters") -> "FaceParameters":
        """These faces (pose, expression, camera) with the identity's shape: one identity for all, or one each."""
        shape = identity.shape
        if shape.shape[0] not in (1, len(self)):
            raise InvalidInputError(f"{shape.shape[0]} identity shapes for {len(self)} pose references: give 1 "
                                    f"(for all) or {len(self)}")
        return replace(self, shape=shape.expand(len(self), -1).clone())
