"""Large finite embeddings keep their direction (issue 8): a float32 norm overflows for elements above ~1.8e19
(~8.5e17 for a 512-d row of equal magnitudes), and ``x / inf`` used to turn such a row into a silent zero vector.

Expected values come from numpy in float64 (its norm does not overflow there) and, for the encoder, from
transformers' CLIPTextModel on the numpy-normalised rows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arc2face_core.errors import InvalidInputError
from arc2face_core.identity.embeddings import average, blend, cosine_similarity, normalize, validate_embeds

transformers = pytest.importorskip("transformers")


def directions(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 512))


def magnitudes() -> np.ndarray:
    """Rows of ±1e18, and scaled to 1e30 and 3e38 (float32's maximum is 3.4e38), and one mixing 1e-3 .. 3e38."""
    rows = directions(4, 0)
    rows[0] = np.sign(rows[0]) * 1e18
    rows[1] *= 1e30 / np.abs(rows[1]).max()
    rows[2] *= 3e38 / np.abs(rows[2]).max()
    rows[3] = np.sign(rows[3]) * np.logspace(-3, np.log10(3e38), 512)
    return rows


def unit64(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def huge() -> torch.Tensor:
    rows = torch.from_numpy(magnitudes()).float()
    assert torch.isfinite(rows).all()
    return rows


def test_the_plain_float32_norm_would_zero_these_rows():
    """The case this guards: each row is finite, yet a float32 norm is inf and the naive quotient is zero."""
    rows = huge()
    assert torch.isinf(rows.norm(dim=1)).all()
    assert ((rows / rows.norm(dim=1, keepdim=True)).abs().amax(dim=1) == 0).all()


def test_normalize_keeps_the_direction_of_huge_rows():
    out = normalize(huge())
    np.testing.assert_allclose(out.double().numpy(), unit64(huge().double().numpy()), atol=1e-6)
    np.testing.assert_allclose(out.norm(dim=1).numpy(), 1.0, atol=1e-6)


def test_float64_rows_beyond_float32_keep_their_direction():
    rows = directions(2, 1) * np.array([[1e300], [1e-3]])
    out = normalize(torch.from_numpy(rows))
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.double().numpy(), unit64(directions(2, 1)), atol=1e-6)
    assert validate_embeds(torch.from_numpy(rows)).isfinite().all()


@pytest.mark.parametrize("method", ["linear", "slerp"])
def test_blend_of_huge_rows(method):
    a, b = huge()[:2], huge()[2:]
    ua, ub = unit64(magnitudes()[:2]), unit64(magnitudes()[2:])
    w = 0.3
    if method == "linear":
        expected = unit64((1 - w) * ua + w * ub)
    else:
        omega = np.arccos(np.clip((ua * ub).sum(1, keepdims=True), -1, 1))
        expected = unit64(np.sin((1 - w) * omega) / np.sin(omega) * ua + np.sin(w * omega) / np.sin(omega) * ub)
    np.testing.assert_allclose(blend(a, b, w, method).double().numpy(), expected, atol=1e-5)
    # weight 1 gives b itself (it used to fail as "opposite directions" once b had become a zero row)
    np.testing.assert_allclose(blend(a, b, 1.0, method).double().numpy(), ub, atol=1e-5)


def test_average_and_cosine_of_huge_rows():
    rows, units = huge(), unit64(magnitudes())
    np.testing.assert_allclose(average(rows).double().numpy(), unit64(units.mean(0, keepdims=True)), atol=1e-5)
    np.testing.assert_allclose(cosine_similarity(rows, rows).double().numpy(), units @ units.T, atol=1e-5)


def test_zero_rows_are_still_refused():
    with pytest.raises(InvalidInputError, match=r"rows \[2\] are zero vectors"):
        normalize(torch.cat([huge()[:1], torch.zeros(1, 512)]))


def test_the_encoder_projects_huge_rows_like_their_unit_vectors(id_encoder, encoder_root):
    """Against transformers' CLIPTextModel with the numpy-normalised row in place of the 'id' token."""
    from arc2face_core.identity import prompt_tokens as tok

    hf = transformers.CLIPTextModel.from_pretrained(encoder_root / "encoder").eval()
    positive, _ = id_encoder.encode(huge())
    ids = tok.padded_ids(tok.PSEUDO_PROMPT_IDS).unsqueeze(0)
    table = hf.get_input_embeddings().weight
    with torch.no_grad():
        for row, unit in zip(positive, unit64(magnitudes())):
            table[tok.ID_TOKEN] = torch.nn.functional.pad(torch.from_numpy(unit).float(), (0, 256))
            torch.testing.assert_close(row, hf(input_ids=ids).last_hidden_state[0], atol=1e-5, rtol=0)


def test_ordinary_rows_are_divided_by_their_norm_bit_for_bit():
    """The reference normalises with id_emb / torch.norm(id_emb, dim=1, keepdim=True): ordinary rows get exactly
    that (a rescaled path would move them by an ulp, which the encoder then amplifies)."""

    rows = torch.randn(64, 512, generator=torch.Generator().manual_seed(3)) * 7.3
    reference = rows / torch.norm(rows, dim=1, keepdim=True)
    assert torch.equal(normalize(rows), reference)
    mixed = rows.clone()
    mixed[5] *= 1e30                        # overflows a float32 norm
    out = normalize(mixed)
    assert torch.equal(out[:5], reference[:5]) and torch.equal(out[6:], reference[6:])
    torch.testing.assert_close(out[5], reference[5], rtol=1e-6, atol=1e-7)


def test_identities_files_keep_the_direction_of_huge_rows(tmp_path):
    """Save Embeddings / the command line's identities file, and reading one back (they used to write zero rows, which
    the file then refused to load)."""
    from safetensors.torch import save_file

    from arc2face_core.identity.files import embeddings_bytes, load_embeddings, save_embeddings

    expected = unit64(huge().double().numpy())
    saved = save_embeddings(tmp_path / "huge.safetensors", huge())
    rows, _ = load_embeddings(saved)
    np.testing.assert_allclose(rows.double().numpy(), expected, atol=1e-6)
    assert len(embeddings_bytes(huge())) > 4 * 512 * 4
    save_file({"embeddings": huge()}, str(tmp_path / "raw.safetensors"))   # written by another tool, not normalised
    rows, _ = load_embeddings(tmp_path / "raw.safetensors")
    np.testing.assert_allclose(rows.double().numpy(), expected, atol=1e-6)


def test_dataset_identity_proposals_of_huge_rows_keep_their_direction():
    from arc2face_core.datasets.sampling import CANDIDATE_BLOCK, unique_identities

    def propose(generator, count):
        rows = torch.randn(count, 512, generator=generator, dtype=torch.float64)
        return (rows * 1e30 / rows.abs().amax(dim=1, keepdim=True)).float()

    ids = unique_identities(3, seed=0, propose=propose)
    first = torch.randn(CANDIDATE_BLOCK, 512, generator=torch.Generator().manual_seed(0), dtype=torch.float64)[:1]
    np.testing.assert_allclose(ids.embeds[:1].double().numpy(), unit64(first.numpy()), atol=1e-6)
