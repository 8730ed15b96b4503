"""Expressions outside what the adapter was trained on are refused (issue 8): hand-made coefficients beyond ±10 PCA
standard deviations ("1e39" used to overflow float32 to inf, "1e30" gave black images, "1e6" was accepted), and
expressions from other nodes with eyelids, jaw or coefficients SMIRK can never output."""

from __future__ import annotations

import logging

import pytest
import torch

from arc2face_core.errors import InvalidInputError
from arc2face_core.expression.adapter import validate_expressions
from arc2face_core.expression.vectors import blend_expressions, make_expression, parse_coefficients

PCA = r"units of the PCA standard deviation"


@pytest.mark.parametrize("text, position", [("1e39", 1), ("0 1e30", 2), ("1 2 1e6", 3), ("-10.5", 1), ("11", 1)])
def test_hand_made_coefficients_beyond_ten_deviations_are_refused(text, position):
    with pytest.raises(InvalidInputError, match=rf"coefficient {position} is '[^']+'\. FLAME expression "
                                                rf"coefficients are in {PCA}.*from -10 to 10"):
        make_expression(coefficients=text)


def test_ten_deviations_pass_and_above_four_warn(caplog):
    with caplog.at_level(logging.WARNING, logger="arc2face_core.expression.vectors"):
        assert make_expression(coefficients="10 -10")[0, :2].tolist() == [10.0, -10.0]
    assert "magnitude 10: more than 4 PCA standard deviations" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="arc2face_core.expression.vectors"):
        assert parse_coefficients([3.0, -4.0])[:2] == [3.0, -4.0]
    assert caplog.text == ""


def _smirk_like(**columns) -> torch.Tensor:
    x = torch.zeros(2, 55)
    x[:, 50:52] = 0.5
    x[:, 52] = 0.2
    for column, value in columns.items():
        x[1, int(column[1:])] = value
    return x


@pytest.mark.parametrize("columns, message", [
    ({"c0": 12.0}, rf"row 2 of 2\) has expression coefficient 1 = 12\. FLAME expression coefficients are in {PCA}"),
    ({"c49": -1e30}, r"expression coefficient 50 = -1e\+30"),
    ({"c50": 1.2}, r"row 2 of 2\) has an eyelid value of 1\.2; it must be 0 \(open\) to 1 \(closed\)"),
    ({"c51": -0.01}, r"eyelid value of -0\.01"),
    ({"c52": -0.1}, r"jaw opening value of -0\.1; it must be at least 0 rad"),
    ({"c53": 0.25}, r"sideways jaw value of 0\.25; it must be from -0\.2 to 0\.2 rad"),
])
def test_expressions_from_other_nodes_are_checked_where_they_enter(columns, message):
    bad = _smirk_like(**columns)
    with pytest.raises(InvalidInputError, match=message):
        validate_expressions(bad, 55)
    # Blending stays plain arithmetic; the blend is checked where it enters the adapter.
    with pytest.raises(InvalidInputError, match=message):
        validate_expressions(blend_expressions(bad, bad, 0.5), 55)


def test_smirk_bounds_pass():
    """Exactly what SMIRK's clamps produce (float32 0.2 is a hair above 0.2) passes; other widths are not checked."""
    x = _smirk_like(c50=1.0, c51=0.0, c52=0.0, c53=0.2, c54=-0.2)
    assert torch.equal(validate_expressions(x, 55), x)
    wide = torch.full((1, 52), 50.0)       # not the FLAME layout: only finiteness is checked
    assert torch.equal(validate_expressions(wide, 52), wide)
