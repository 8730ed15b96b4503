"""No real people: sampled identities kept away from an excluded set (arc2face_core.datasets.exclusion and the
sampler's ``exclude`` hook), and ``dataset --exclude-identities``.

Independent routes: the expected identities come from a plain loop over the very candidates the sampler was given
(float64 numpy, one candidate at a time: refused when its cosine to any excluded row reaches the threshold, or to any
identity kept before it), never from the sampler's block code; the chunked closeness against numpy's full product;
the dataset's candidates redrawn from the documented stream (``torch.randn`` blocks of 4096 from the identity seed).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from test_dataset_sampling import ClusteredProposal
from test_datasets import command, models, run  # noqa: F401  (models: the module-scoped models folder fixture)

from arc2face_core.cli.main import main as cli_main
from arc2face_core.datasets import exclusion
from arc2face_core.datasets.exclusion import ExcludedSet, check_given
from arc2face_core.datasets.sampling import unique_identities
from arc2face_core.errors import InvalidInputError
from arc2face_core.identity.files import load_embeddings, save_embeddings


def unit(rows) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def loop_with_exclusion(candidates: np.ndarray, excluded: np.ndarray, count: int, threshold: float = 0.3,
                        exclude_threshold: float = 0.3) -> tuple[np.ndarray, int, float, int]:
    """The rule, one candidate at a time: (kept identities, candidates refused for the excluded set before the last
    kept one, the kept identities' largest cosine to the excluded set, every candidate refused before the last kept)."""
    kept, closest = [], []
    refused_near = refused = pending_near = pending = 0
    for row in unit(candidates):
        near = float(np.max(excluded @ row))
        if near >= exclude_threshold or not all(float(row @ other) < threshold for other in kept):
            pending += 1
            pending_near += near >= exclude_threshold
            continue
        kept.append(row)
        closest.append(near)
        refused, refused_near, pending, pending_near = refused + pending, refused_near + pending_near, 0, 0
        if len(kept) == count:
            break
    return np.stack(kept), refused_near, max(closest), refused


def test_exclusion_redraws_exactly_the_identities_near_the_excluded_set():
    plain = unique_identities(40, seed=3, threshold=0.3, propose=ClusteredProposal()).embeds.double().numpy()
    rng = np.random.default_rng(0)
    off = unit(rng.standard_normal(512) - (rng.standard_normal(512) @ plain[30]) * plain[30])
    excluded = unit(np.stack([plain[5], plain[12], plain[20],                  # three identities exactly
                              0.9 * plain[30] + math.sqrt(1 - 0.81) * off,     # one at cosine ~0.9
                              *rng.standard_normal((20, 512))]))               # and strangers
    proposal = ClusteredProposal()
    sampled = unique_identities(40, seed=3, threshold=0.3, propose=proposal,
                                exclude=ExcludedSet(torch.from_numpy(excluded).float()).closest)
    candidates = torch.cat(proposal.given).numpy()
    expected, refused_near, closest, refused = loop_with_exclusion(candidates, excluded, 40)
    np.testing.assert_allclose(sampled.embeds.double().numpy(), expected, atol=1e-6, rtol=0)
    assert sampled.excluded == refused_near and refused_near >= 4              # the four collisions, at least
    assert sampled.rejected == refused > refused_near                          # both reasons counted
    assert math.isclose(sampled.exclude_max_similarity, closest, abs_tol=1e-5)
    assert (sampled.embeds.double().numpy() @ excluded.T).max() < 0.3
    for index in (5, 12, 20, 30):                                              # the colliding identities are gone
        assert np.abs(sampled.embeds.double().numpy() @ plain[index]).max() < 0.999
    unaffected = plain[:5]                                                     # before the first collision: the same
    np.testing.assert_allclose(sampled.embeds[:5].double().numpy(), unaffected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("cosine, kept", [(0.2999, True), (0.3001, False)])
def test_the_threshold_edge(cosine, kept):
    """A candidate at cosine just under the threshold to an excluded row stays; just over it, it is redrawn (1e-4
    from the threshold: far above float32 rounding, which decides an exact tie)."""
    first = unique_identities(1, seed=8).embeds[0].double()
    g = torch.randn(512, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    side = g - (g @ first) * first
    row = cosine * first + math.sqrt(1 - cosine * cosine) * side / side.norm()
    excluded = ExcludedSet(row[None].float(), threshold=0.3)
    closest = float(excluded.closest(first[None].float())[0])
    assert abs(closest - cosine) < 1e-6
    sampled = unique_identities(1, seed=8, exclude=excluded.closest, exclude_threshold=0.3)
    assert torch.equal(sampled.embeds[0], first.float()) == kept
    assert sampled.excluded == (0 if kept else 1)


def test_closeness_in_chunks_equals_the_full_product(monkeypatch):
    monkeypatch.setattr(exclusion, "EXCLUDED_CHUNK", 7)
    monkeypatch.setattr(exclusion, "CANDIDATE_CHUNK", 5)
    rng = np.random.default_rng(4)
    excluded, rows = unit(rng.standard_normal((30, 512))), unit(rng.standard_normal((23, 512)))
    got = ExcludedSet(torch.from_numpy(excluded).float()).closest(torch.from_numpy(rows).float())
    np.testing.assert_allclose(got.double().numpy(), (rows @ excluded.T).max(axis=1), atol=1e-6)


def test_given_identities_too_close_are_refused_by_row():
    given = unique_identities(6, seed=2).embeds
    excluded = ExcludedSet(torch.stack([given[4], -given[1]]), threshold=0.3)
    with pytest.raises(InvalidInputError, match=r"1 of the given identities .* rows 4 \(1\.000\)"):
        check_given(given, excluded)
    far = ExcludedSet(-given[:2], threshold=0.3)
    assert math.isclose(check_given(given, far), float((given @ -given[:2].T).max()), abs_tol=1e-6)


# ------------------------------------------------------------------------------------------------- the command


def documented_candidates(seed: int, blocks: int = 1) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.cat([torch.randn(4096, 512, generator=generator) for _ in range(blocks)]).double().numpy()


def test_dataset_redraws_the_excluded_and_records_it(models, tiny_vae_folder, tmp_path):  # noqa: F811
    """The excluded set holds the first two identities the seed would give plus one near the fourth: those are
    redrawn, and identities.safetensors records the set and the largest cosine to it."""
    plain = unique_identities(4, seed=7).embeds
    near = unit(0.95 * plain[3].double().numpy() + 0.05 * np.random.default_rng(0).standard_normal(512))
    save_embeddings(tmp_path / "lfw.safetensors", torch.cat([plain[:2], torch.from_numpy(near[None]).float()]))
    out = tmp_path / "faces"
    assert run(models, tiny_vae_folder, out, "--identities", "4", "--seed", "7", "--exclude-identities",
               str(tmp_path / "lfw.safetensors"), "--prepare-only") == 0
    identities, source = load_embeddings(out / "identities.safetensors")
    excluded = load_embeddings(tmp_path / "lfw.safetensors")[0].double().numpy()
    expected, refused, closest, _ = loop_with_exclusion(documented_candidates(7), excluded, 4)
    np.testing.assert_allclose(identities.double().numpy(), expected, atol=1e-6, rtol=0)
    assert refused == 3 and source["exclude"]["refused"] == 3
    assert source["exclude"]["count"] == 3 and source["exclude"]["threshold"] == 0.3
    assert source["exclude"]["sources"] == [{"file": "lfw.safetensors", "embeddings": 3}]
    assert math.isclose(source["exclude"]["max_similarity"], closest, abs_tol=1e-5)
    assert math.isclose(closest, float((identities.double().numpy() @ excluded.T).max()), abs_tol=1e-6)
    settings = json.loads((out / "dataset.json").read_text())["settings"]
    assert settings["identity"]["exclude"] == {"sources": ["lfw.safetensors"], "threshold": 0.3}


def test_dataset_excluding_a_photo_folder(models, tiny_vae_folder, tmp_path, astronaut_scene,  # noqa: F811
                                          face_analyzer, capsys):
    """Photos are embedded with the face path (the black one has no face); identities sampled from a PCA of the same
    person all fall near her: the run stops with a message naming the exclusion."""
    from PIL import Image

    photos = tmp_path / "lfw" / "person"
    photos.mkdir(parents=True)
    face = astronaut_scene.image
    shifted = [np.clip(face.astype(int) + s, 0, 255).astype(np.uint8) for s in (-40, 0, 40)]
    for index, image in enumerate(shifted + [np.zeros_like(face)]):
        Image.fromarray(image).save(photos / f"{index}.png")
    out = tmp_path / "faces"
    assert run(models, tiny_vae_folder, out, "--identities", "2", "--exclude-identities", str(photos.parent),
               "--exclude-threshold", "0.95", "--prepare-only") == 0
    identities, source = load_embeddings(out / "identities.safetensors")
    embeds = face_analyzer.embed([np.ascontiguousarray(v[..., ::-1]) for v in shifted]).embeds.double().numpy()
    assert source["exclude"]["sources"] == [{"photos": "lfw", "embeddings": 3, "without_face": 1}]
    assert math.isclose(source["exclude"]["max_similarity"],
                        float((identities.double().numpy() @ unit(embeds).T).max()), abs_tol=1e-5)
    crowded = tmp_path / "crowded"
    assert run(models, tiny_vae_folder, crowded, "--identities", "2", "--pca", str(photos.parent),
               "--identity-threshold", "0.9", "--exclude-identities", str(photos.parent), "--prepare-only") == 2
    assert "too close to the excluded identities" in capsys.readouterr().err


def test_given_identities_near_the_excluded_are_an_error(models, tiny_vae_folder, tmp_path, capsys):  # noqa: F811
    given = unique_identities(3, seed=1).embeds
    save_embeddings(tmp_path / "given.safetensors", given)
    save_embeddings(tmp_path / "people.safetensors", given[2:])
    assert cli_main(command(models, tiny_vae_folder, tmp_path / "out", "--embeddings",
                            str(tmp_path / "given.safetensors"), "--exclude-identities",
                            str(tmp_path / "people.safetensors"), "--prepare-only")) == 2
    assert "rows 2 (1.000)" in capsys.readouterr().err
