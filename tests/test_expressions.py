"""Hand-made 55-d expression vectors: layout, parsing, clamping like SMIRK, blending and validation."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from arc2face_core.errors import InvalidInputError
from arc2face_core.expression.smirk import postprocess
from arc2face_core.expression.vectors import (
    blend_expressions,
    make_expression,
    neutral,
    parse_coefficients,
    validate_expression,
)


def test_neutral_is_zeros():
    out = neutral(3)
    assert out.shape == (3, 55) and out.dtype == torch.float32 and torch.count_nonzero(out) == 0
    assert neutral().shape == (1, 55)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(InvalidInputError, match=f"n must be a whole number of at least 1 and at most 65536, got {re.escape(repr(bad))}"):
            neutral(bad)


def test_make_expression_places_every_part():
    out = make_expression(jaw_open=0.3, eyelids=(0.25, 0.75), coefficients=[1.5, -2.0, 0.0, 3.25])
    assert out.shape == (1, 55) and out.dtype == torch.float32
    expected = np.zeros(55, np.float32)
    expected[:4] = [1.5, -2.0, 0.0, 3.25]
    expected[50:52] = [0.25, 0.75]
    expected[52] = 0.3
    np.testing.assert_array_equal(out[0].numpy(), expected)


def test_string_coefficients_commas_and_spaces():
    out = make_expression(coefficients=" 1.5, -0.25  2e-1,3 ;4\n-5 ")
    np.testing.assert_allclose(out[0, :6].numpy(), [1.5, -0.25, 0.2, 3, 4, -5], rtol=0, atol=1e-7)
    assert torch.count_nonzero(out[0, 6:]) == 0
    assert parse_coefficients("") == [0.0] * 50 and parse_coefficients(None) == [0.0] * 50
    assert parse_coefficients(np.array([1.0, 2.0])) == [1.0, 2.0] + [0.0] * 48
    assert parse_coefficients(torch.tensor([0.5])) == [0.5] + [0.0] * 49


def test_fifty_coefficients_fill_the_expression_part_exactly():
    values = [float(i) / 10 for i in range(50)]
    out = make_expression(coefficients=",".join(str(v) for v in values))
    np.testing.assert_allclose(out[0, :50].numpy(), values, rtol=0, atol=1e-6)
    assert torch.count_nonzero(out[0, 50:]) == 0


def test_too_many_coefficients_are_refused():
    with pytest.raises(InvalidInputError, match="51 expression coefficients.*position 51"):
        make_expression(coefficients=[0.0] * 51)
    with pytest.raises(InvalidInputError, match="52 expression coefficients"):
        make_expression(coefficients=" ".join(["1"] * 52))


@pytest.mark.parametrize("text, position, shown", [
    ("1, 2, abc, 4", 3, "'abc'"),
    ("1 2 3 4 5 6 1.2.3", 7, "'1.2.3'"),
    ("nan", 1, "'nan'"),
    ("0, inf", 2, "'inf'"),
])
def test_bad_string_coefficients_name_the_position(text, position, shown):
    with pytest.raises(InvalidInputError, match=f"coefficient {position} is {shown}"):
        parse_coefficients(text)


@pytest.mark.parametrize("text, position", [("1,,2", 2), ("1, ,2", 2), (",1", 1), ("1, 2,", 3), ("0.5;;1", 2)])
def test_an_empty_field_is_refused_instead_of_shifting_the_later_coefficients(text, position):
    """"1,,2" used to read as [1, 2]: coefficient 3 moved into place 2."""
    with pytest.raises(InvalidInputError, match=f"coefficient {position} is empty in {text!r}.*write 0"):
        parse_coefficients(text)
    assert parse_coefficients("1, 0, 2")[:3] == [1.0, 0.0, 2.0]


def test_bad_list_coefficients_name_the_position():
    with pytest.raises(InvalidInputError, match="coefficient 2 is 'x'"):
        parse_coefficients([1.0, "x"])
    with pytest.raises(InvalidInputError, match="coefficient 1 is True"):
        parse_coefficients([True])
    with pytest.raises(InvalidInputError, match="list of numbers"):
        parse_coefficients(3.0)


def test_jaw_and_eyelids_are_clamped_like_smirk():
    out = make_expression(jaw_open=-0.4, eyelids=(-0.5, 1.7))
    np.testing.assert_array_equal(out[0, 50:].numpy(), [0.0, 1.0, 0.0, 0.0, 0.0])
    both = make_expression(eyelids=0.6)
    np.testing.assert_allclose(both[0, 50:52].numpy(), [0.6, 0.6], rtol=0, atol=1e-7)
    # a hand-made vector is a fixed point of SMIRK's output activations
    made = make_expression(jaw_open=0.45, eyelids=(0.1, 0.9), coefficients="2 -1 0.5")
    torch.testing.assert_close(postprocess(made), made, atol=0, rtol=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"jaw_open": float("nan")}, r"jaw_open \(radians\) must be a finite number, got nan"),
    ({"jaw_open": "0.3"}, r"jaw_open \(radians\) must be a finite number, got '0.3' \(str\)"),
    ({"jaw_open": True}, r"jaw_open \(radians\) must be a finite number, got True \(bool\)"),
    ({"eyelids": (0.1, 0.2, 0.3)}, r"eyelids must be one number or a pair \(left, right\), got \(0.1, 0.2, 0.3\)"),
    ({"eyelids": (0.1, float("inf"))}, "right eyelid value must be a finite number, got inf"),
    ({"eyelids": "closed"}, "eyelids must be one number or a pair .*'closed'"),
    ({"eyelids": (None, 0.1)}, "left eyelid value must be a finite number, got None"),
])
def test_bad_jaw_or_eyelids(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        make_expression(**kwargs)


def test_blend_endpoints_and_midpoint():
    a = make_expression(jaw_open=0.2, eyelids=0.0, coefficients=[1.0, -1.0])
    b = make_expression(jaw_open=0.4, eyelids=1.0, coefficients=[3.0, 1.0, 2.0])
    torch.testing.assert_close(blend_expressions(a, b, 0.0), a, atol=0, rtol=0)
    torch.testing.assert_close(blend_expressions(a, b, 1.0), b, atol=0, rtol=0)
    mid = blend_expressions(a, b, 0.25)
    expected = np.zeros(55, np.float32)
    expected[:3] = [0.75 * 1 + 0.25 * 3, 0.75 * -1 + 0.25 * 1, 0.25 * 2]
    expected[50:52] = 0.25
    expected[52] = 0.75 * 0.2 + 0.25 * 0.4
    np.testing.assert_allclose(mid[0].numpy(), expected, rtol=0, atol=1e-6)


def test_blend_broadcasts_a_single_expression_over_a_batch():
    batch = torch.arange(3 * 55, dtype=torch.float32).reshape(3, 55) / 100
    one = make_expression(jaw_open=0.3)
    out = blend_expressions(batch, one, 0.5)
    assert out.shape == (3, 55)
    torch.testing.assert_close(out, 0.5 * batch + 0.5 * one.expand(3, 55), atol=1e-7, rtol=0)
    flipped = blend_expressions(one, batch, 0.5)
    torch.testing.assert_close(flipped, out, atol=1e-7, rtol=0)
    torch.testing.assert_close(blend_expressions(batch, batch.flip(0), 0.5)[1], batch[1], atol=1e-7, rtol=0)
    with pytest.raises(InvalidInputError, match="batch of 3 expressions with a batch of 2"):
        blend_expressions(batch, neutral(2), 0.5)


@pytest.mark.parametrize("weight", [-0.1, 1.5, float("nan"), True, "0.5"])
def test_blend_weight_must_be_in_0_1(weight):
    with pytest.raises(InvalidInputError, match="blend weight"):
        blend_expressions(neutral(), neutral(), weight)


def test_validate_expression_shapes_and_values():
    single = validate_expression(torch.ones(55, dtype=torch.float64))
    assert single.shape == (1, 55) and single.dtype == torch.float32
    assert validate_expression(np.zeros((2, 55), np.float32)).shape == (2, 55)
    bad_row = torch.zeros(3, 55)
    bad_row[2, 7] = float("inf")
    with pytest.raises(InvalidInputError, match=r"NaN or infinite values \(rows \[3\]\)"):
        validate_expression(bad_row)
    for bad, message in [(torch.zeros(2, 50), r"\[N, 55\]"), (torch.zeros(1, 1, 55), r"\[N, 55\]"),
                         (torch.zeros(0, 55), "empty"), (torch.zeros(1, 55, dtype=torch.long), "floats"),
                         ([0.0] * 55, "tensor")]:
        with pytest.raises(InvalidInputError, match=message):
            validate_expression(bad)
