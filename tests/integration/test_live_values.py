"""Random Identity, Embedding Blend, Expression and Expression Blend in a real ComfyUI, read back by value.

ComfyUI's Preview Any node shows what a node returned as text; a one-row tensor (512 or 55 values, under torch's
1000-element summary limit) is printed in full to four decimals, so the values these nodes computed inside the server
can be compared with independent computations: scipy's geometric_slerp, a mix written out here, expressions by hand.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

NUMBER = re.compile(r"-?\d+\.\d*(?:e[-+]\d+)?")
ROW = re.compile(r"\[([^\[\]]+)\]")   # an innermost bracket group: one row of a 2-D tensor


def shown_values(entry: dict, node_id: str) -> list[np.ndarray]:
    """The rows a Preview Any node showed (torch's print of a 2-D tensor), as float arrays."""
    text = entry["outputs"][node_id]["text"][0]
    assert text.startswith("tensor([["), text[:80]
    return [np.array([float(x) for x in NUMBER.findall(row)]) for row in ROW.findall(text)]


def node(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def preview(source: str) -> dict:
    return node("PreviewAny", source=[source, 0])


@pytest.fixture(scope="module")
def values(comfy) -> dict:
    prompt = {
        "1": node("Arc2FaceRandomIdentity", seed=11, count=1),
        "2": node("Arc2FaceRandomIdentity", seed=12, count=1),
        "3": node("Arc2FaceEmbeddingBlend", embeds_a=["1", 0], embeds_b=["2", 0], weight=0.3, method="slerp"),
        "4": node("Arc2FaceEmbeddingBlend", embeds_a=["1", 0], embeds_b=["2", 0], weight=0.3, method="linear"),
        "5": node("Arc2FaceRandomIdentity", seed=11, count=3),
        "10": node("Arc2FaceExpression", jaw_open=0.2, eyelid_left=0.1, eyelid_right=0.0, coefficients="1.5, -2"),
        "11": node("Arc2FaceExpression", jaw_open=0.5, eyelid_left=1.0, eyelid_right=0.5, coefficients="0.5 0 3"),
        "12": node("Arc2FaceExpressionBlend", expression_a=["10", 0], expression_b=["11", 0], weight=0.25),
    }
    prompt.update({f"p{i}": preview(i) for i in ("1", "2", "3", "4", "5", "10", "11", "12")})
    entry = comfy.run_ok(prompt)
    return {i: shown_values(entry, f"p{i}") for i in ("1", "2", "3", "4", "5", "10", "11", "12")}


def test_random_identities_are_unit_rows_and_seeded(values):
    (a,), (b,) = values["1"], values["2"]
    assert a.shape == b.shape == (512,)
    assert abs(np.linalg.norm(a) - 1) < 2e-3 and abs(np.linalg.norm(b) - 1) < 2e-3
    assert np.abs(a - b).max() > 0.05                         # another seed, another person
    assert len(values["5"]) == 3                              # count rows


def test_blend_in_the_server_is_slerp_or_the_normalised_mix(values):
    from scipy.spatial import geometric_slerp

    (a,), (b,), (slerp,), (linear,) = values["1"], values["2"], values["3"], values["4"]
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    np.testing.assert_allclose(slerp, geometric_slerp(a, b, 0.3), atol=3e-4)
    mix = 0.7 * a + 0.3 * b
    np.testing.assert_allclose(linear, mix / np.linalg.norm(mix), atol=3e-4)
    assert np.abs(slerp - linear).max() > 1e-3               # the two methods differ (orthogonal-ish rows)


def test_expressions_by_hand_and_their_blend(values):
    first, second = np.zeros(55), np.zeros(55)
    first[:2], first[50:52], first[52] = [1.5, -2.0], [0.1, 0.0], 0.2     # 50 coefficients, 2 eyelids, jaw
    second[:3], second[50:52], second[52] = [0.5, 0.0, 3.0], [1.0, 0.5], 0.5
    (a,), (b,), (mixed,) = values["10"], values["11"], values["12"]
    np.testing.assert_allclose(a, first, atol=1e-4)
    np.testing.assert_allclose(b, second, atol=1e-4)
    np.testing.assert_allclose(mixed, 0.75 * first + 0.25 * second, atol=1e-4)
