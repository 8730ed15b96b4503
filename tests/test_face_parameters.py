"""FaceParameters: the FLAME parameter batch SMIRK produces and the pose hint and Expression Adapter consume."""

from __future__ import annotations

import pytest
import torch

from arc2face_core.errors import InvalidInputError
from arc2face_core.pose.face_parameters import FaceParameters


def params(n: int = 2, **overrides) -> FaceParameters:
    widths = {"shape": 300, "expression": 50, "eyelids": 2, "jaw": 3, "pose": 3, "camera": 3}
    values = {name: torch.full((n, w), float(i + 1)) for i, (name, w) in enumerate(widths.items())}
    values.update(overrides)
    return FaceParameters(**values)


def test_expression_vector_is_smirks_order():
    vector = params(2).expression_vector()
    assert vector.shape == (2, 55)
    assert vector[0, :50].eq(2).all() and vector[0, 50:52].eq(3).all() and vector[0, 52:].eq(4).all()


def test_shape_comes_from_the_identity():
    poses = params(3)
    identity = params(1, shape=torch.arange(300, dtype=torch.float32)[None])
    mixed = poses.with_shape_of(identity)
    assert mixed.shape.shape == (3, 300) and mixed.shape[2, 299] == 299
    assert torch.equal(mixed.pose, poses.pose) and torch.equal(mixed.expression, poses.expression)
    with pytest.raises(InvalidInputError, match="2 identity shapes for 3 pose references: give 1"):
        poses.with_shape_of(params(2))


@pytest.mark.parametrize("overrides, message", [
    ({"shape": torch.zeros(2, 100)}, r"FLAME shape must be a tensor \[N, 300\], got \(2, 100\)"),
    ({"jaw": torch.zeros(3, 3)}, "same number of faces"),
    ({"pose": torch.tensor([[0.0, float("nan"), 0.0]] * 2)}, "pose contains NaN"),
    ({"camera": [1.0, 0.0, 0.0]}, r"camera must be a tensor \[N, 3\], got list"),
    ({"crop": torch.eye(3)}, r"crop transforms must be \[N, 3, 3\]"),
])
def test_bad_parameters_are_refused(overrides, message):
    with pytest.raises(InvalidInputError, match=message):
        params(2, **overrides)
