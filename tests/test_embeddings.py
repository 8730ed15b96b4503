"""Identity arithmetic: every output is unit-norm, and each method equals an independent numpy/scipy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from arc2face_core.errors import InvalidInputError
from arc2face_core.identity.embeddings import (
    average,
    blend,
    cosine_similarity,
    interpolation_weights,
    normalize,
    random_identities,
    validate_embeds,
)


def rows(n: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(n, 512, generator=torch.Generator().manual_seed(seed)) * scale


def unit_np(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def assert_unit(x: torch.Tensor):
    torch.testing.assert_close(x.norm(dim=1), torch.ones(x.shape[0]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["slerp", "linear"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_endpoints_and_unit_norm(method, seed):
    a, b = rows(1, seed, 3.0), rows(1, seed + 10, 0.2)
    torch.testing.assert_close(blend(a, b, 0.0, method), normalize(a), atol=1e-6, rtol=0)
    torch.testing.assert_close(blend(a, b, 1.0, method), normalize(b), atol=1e-6, rtol=0)
    for w in (0.1, 0.37, 0.5, 0.9):
        assert_unit(blend(a, b, w, method))


@pytest.mark.parametrize("method", ["slerp", "linear"])
def test_symmetry(method):
    a, b = rows(2, 3), rows(2, 4)
    for w in (0.2, 0.5, 0.75):
        torch.testing.assert_close(blend(a, b, w, method), blend(b, a, 1 - w, method), atol=1e-6, rtol=0)


def test_linear_matches_numpy():
    a, b = rows(3, 5), rows(3, 6)
    w = np.array([0.1, 0.5, 0.8], dtype=np.float64)[:, None]
    ua, ub = unit_np(a.double().numpy()), unit_np(b.double().numpy())
    expected = unit_np((1 - w) * ua + w * ub)
    out = blend(a, b, torch.tensor([0.1, 0.5, 0.8]), "linear")
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)


def test_slerp_moves_at_constant_angular_speed():
    a, b = rows(1, 7), rows(1, 8)
    ua, ub = unit_np(a.double().numpy()[0]), unit_np(b.double().numpy()[0])
    omega = np.arccos(ua @ ub)
    for w in (0.0, 0.25, 0.5, 0.8, 1.0):
        out = blend(a, b, w, "slerp").double().numpy()[0]
        np.testing.assert_allclose(np.arccos(np.clip(out @ ua, -1, 1)), w * omega, atol=1e-3)
        np.testing.assert_allclose(np.arccos(np.clip(out @ ub, -1, 1)), (1 - w) * omega, atol=1e-3)
        # and it stays on the great circle through a and b
        plane = np.stack([ua, ub])
        coeffs, *_ = np.linalg.lstsq(plane.T, out, rcond=None)
        np.testing.assert_allclose(plane.T @ coeffs, out, atol=1e-5)


def test_slerp_and_linear_agree_at_the_midpoint_and_differ_elsewhere():
    a, b = rows(1, 9), rows(1, 10)
    torch.testing.assert_close(blend(a, b, 0.5, "slerp"), blend(a, b, 0.5, "linear"), atol=1e-6, rtol=0)
    gap = (blend(a, b, 0.25, "slerp") - blend(a, b, 0.25, "linear")).abs().max()
    assert gap > 1e-3


def test_broadcasting():
    a, b = rows(1, 11), rows(3, 12)
    out = blend(a, b, 0.3)
    assert out.shape == (3, 512)
    for i in range(3):
        torch.testing.assert_close(out[i:i + 1], blend(a, b[i:i + 1], 0.3), atol=1e-6, rtol=0)
    sweep = blend(rows(1, 13), rows(1, 14), interpolation_weights(5))
    assert sweep.shape == (5, 512)
    assert_unit(sweep)
    with pytest.raises(InvalidInputError, match="cannot pair batches of 2 and 3"):
        blend(rows(2, 1), rows(3, 2), 0.5)
    with pytest.raises(InvalidInputError, match="with 4 weights"):
        blend(rows(2, 1), rows(2, 2), [0.1, 0.2, 0.3, 0.4])


def test_parallel_and_opposite_vectors():
    a = rows(1, 15)
    torch.testing.assert_close(blend(a, 2 * a, 0.3, "slerp"), normalize(a), atol=1e-6, rtol=0)
    with pytest.raises(InvalidInputError, match="opposite"):
        blend(a, -a, 0.5, "slerp")
    with pytest.raises(InvalidInputError, match="zero vector"):
        blend(a, -a, 0.5, "linear")


@pytest.mark.parametrize("weight", [-0.1, 1.5, float("nan")])
def test_weight_out_of_range(weight):
    with pytest.raises(InvalidInputError, match=r"\[0, 1\]"):
        blend(rows(1, 0), rows(1, 1), weight)


def test_unknown_methods():
    with pytest.raises(InvalidInputError, match="unknown blend method"):
        blend(rows(1, 0), rows(1, 1), 0.5, "cubic")
    with pytest.raises(InvalidInputError, match="unknown average method"):
        average(rows(2, 0), "mode")


def test_mean_normalises_each_photo_first():
    """The known pitfall: averaging raw vectors lets one large-norm photo dominate. Scaling a row changes nothing."""
    x = rows(4, 20)
    scaled = x * torch.tensor([[1.0], [50.0], [0.01], [3.0]])
    torch.testing.assert_close(average(scaled, "mean"), average(x, "mean"), atol=1e-6, rtol=0)
    expected = unit_np(unit_np(x.double().numpy()).mean(axis=0, keepdims=True))
    np.testing.assert_allclose(average(x, "mean").numpy(), expected, atol=1e-6)


def test_median_and_trimmed_mean_match_numpy_and_scipy():
    x = rows(7, 21)
    u = unit_np(x.double().numpy())
    np.testing.assert_allclose(average(x, "median").numpy(), unit_np(np.median(u, axis=0, keepdims=True)), atol=1e-6)
    trimmed = stats.trim_mean(u, 0.2, axis=0)[None]
    np.testing.assert_allclose(average(x, "trimmed_mean").numpy(), unit_np(trimmed), atol=1e-6)


@pytest.mark.parametrize("method", ["mean", "median", "trimmed_mean"])
def test_average_shape_norm_and_identity(method):
    out = average(rows(5, 22), method)
    assert out.shape == (1, 512) and out.dtype == torch.float32
    assert_unit(out)
    one = rows(1, 23)
    torch.testing.assert_close(average(one.repeat(4, 1) * 2, method), normalize(one), atol=1e-6, rtol=0)


def test_trimmed_mean_resists_one_outlier_photo():
    person = normalize(rows(1, 24))
    photos = normalize(person + 0.05 * rows(4, 25))
    stranger = normalize(rows(1, 26))
    x = torch.cat([photos, stranger])
    sim = lambda m: float(cosine_similarity(average(x, m), person))  # noqa: E731
    assert sim("trimmed_mean") > sim("mean")


def test_random_identities_are_seeded_unit_vectors():
    a, b, c = random_identities(3, 7), random_identities(3, 7), random_identities(3, 8)
    assert a.shape == (3, 512)
    assert_unit(a)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert (a - c).abs().max() > 0.1
    with pytest.raises(InvalidInputError, match="count must be a whole number of at least 1 and at most 1000000, got 0"):
        random_identities(0, 1)


def test_cosine_similarity_matrix():
    a, b = rows(2, 30), rows(3, 31)
    expected = unit_np(a.double().numpy()) @ unit_np(b.double().numpy()).T
    np.testing.assert_allclose(cosine_similarity(a, b).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((1, 512)), "torch tensor"),
    (torch.zeros(2, 512, dtype=torch.int64), "floating point"),
    (torch.tensor([[float("inf")] * 512]), "rows \\[1\\] contain NaN"),
])
def test_validate(bad, message):
    with pytest.raises(InvalidInputError, match=message):
        validate_embeds(bad)
    assert validate_embeds(torch.ones(512)).shape == (1, 512)
