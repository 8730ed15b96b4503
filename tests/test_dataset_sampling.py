"""Synthetic identities and per-image seeds (arc2face_core.datasets: seeds, sampling, pca, plan).

Independent routes: the seed hash recomputed from its documented recipe with hashlib; the noise against the draw
ComfyUI's KSampler makes (``torch.manual_seed`` + ``torch.randn``); the uniqueness rule against a brute-force greedy
pass over the very candidates the sampler was given; the PCA against numpy's covariance eigendecomposition; the
jitter against its expected cosine 1/sqrt(1 + J^2), worked out by hand.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from arc2face_core.datasets.pca import IdentityPCA
from arc2face_core.datasets.plan import make_batches, parse_shard, shard_batches
from arc2face_core.datasets.sampling import (
    CANDIDATE_BLOCK,
    jitter_identity,
    random_directions,
    unique_identities,
)
from arc2face_core.datasets.seeds import image_noise, image_seed
from arc2face_core.errors import CorruptWeightsError, InvalidInputError

# ----------------------------------------------------------------------------------------------------------- seeds


def documented_seed(dataset_seed, identity, image, attempt, purpose="noise"):
    text = f"arc2face-dataset/v1/{purpose}/{dataset_seed}/{identity}/{image}/{attempt}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 11


@pytest.mark.parametrize("args", [(0, 0, 0, 0), (7, 41, 3, 2), (2 ** 64 - 1, 99_999, 63, 9)])
def test_image_seed_is_the_documented_hash(args):
    assert image_seed(*args) == documented_seed(*args)
    assert image_seed(*args, purpose="jitter") == documented_seed(*args, purpose="jitter")
    assert 0 <= image_seed(*args) < 2 ** 53          # exact in JSON and in the web UI's seed widget


def test_image_seeds_are_distinct():
    seeds = {image_seed(3, i, j, a) for i in range(40) for j in range(10) for a in range(3)}
    assert len(seeds) == 40 * 10 * 3
    assert image_seed(3, 1, 2, 0) != image_seed(3, 2, 1, 0) != image_seed(4, 1, 2, 0)


def test_image_noise_is_what_ksampler_draws_for_a_batch_of_one():
    seed = image_seed(11, 5, 2, 1)
    generator = torch.manual_seed(seed)     # ComfyUI's prepare_noise: the global generator, seeded
    expected = torch.randn([1, 4, 64, 64], dtype=torch.float32, generator=generator, device="cpu")
    assert torch.equal(image_noise(seed, 4, 64, 64), expected)
    assert not torch.equal(image_noise(seed + 1, 4, 64, 64), expected)


@pytest.mark.parametrize("call, message", [
    (lambda: image_seed(-1, 0, 0), "dataset seed"), (lambda: image_seed(0, -1, 0), "identity"),
    (lambda: image_seed(0, 0, 1.5), "image"), (lambda: image_seed(0, 0, 0, 0, "colour"), "purpose"),
])
def test_bad_seed_inputs_are_refused(call, message):
    with pytest.raises(InvalidInputError, match=message):
        call()


# ------------------------------------------------------------------------------------------------------ uniqueness


def max_pairwise(rows: torch.Tensor) -> float:
    best = -1.0
    for start in range(0, rows.shape[0], 2048):
        block = rows[start:start + 2048] @ rows.T
        block[:, start:start + 2048].fill_diagonal_(-2.0)
        best = max(best, block.max().item())
    return best


def test_unique_identities_properties():
    sampled = unique_identities(10_000, seed=5)        # > KEPT_CHUNK: the kept set is compared in chunks
    rows = sampled.embeds
    assert rows.shape == (10_000, 512) and rows.dtype == torch.float32
    torch.testing.assert_close(rows.norm(dim=1), torch.ones(10_000), atol=1e-5, rtol=0)
    worst = max_pairwise(rows)
    assert worst < 0.3 and math.isclose(sampled.max_similarity, worst, abs_tol=1e-5)
    assert sampled.candidates % CANDIDATE_BLOCK == 0 and sampled.candidates >= 10_000


def test_unique_identities_are_reproducible_and_prefix_stable():
    a = unique_identities(300, seed=1).embeds
    assert torch.equal(a, unique_identities(300, seed=1).embeds)
    assert torch.equal(unique_identities(5000, seed=1).embeds[:300], a)     # more identities keep the first ones
    assert (a - unique_identities(300, seed=2).embeds).abs().max() > 0.1


class ClusteredProposal:
    """Candidates around a few centres (cosine ~0.26 +- 0.05 within a cluster): the rule bites often. Records them."""

    def __init__(self, spread: float = 1.7):
        self.spread, self.given = spread, []

    def __call__(self, generator, count):
        centres = torch.randn(6, 512, generator=torch.Generator().manual_seed(0))
        which = torch.randint(0, 6, (count,), generator=generator)
        rows = centres[which] + self.spread * torch.randn(count, 512, generator=generator)
        self.given.append(rows.clone())
        return rows


def test_the_greedy_rule_equals_a_brute_force_pass():
    proposal = ClusteredProposal()
    sampled = unique_identities(40, seed=3, threshold=0.3, propose=proposal)
    candidates = torch.cat(proposal.given).double()
    candidates = candidates / candidates.norm(dim=1, keepdim=True)
    kept = []                                   # the paper's rule, one candidate at a time
    for row in candidates:
        if all(float(row @ other) < 0.3 for other in kept):
            kept.append(row)
        if len(kept) == 40:
            break
    torch.testing.assert_close(sampled.embeds.double(), torch.stack(kept), atol=1e-6, rtol=0)
    assert sampled.rejected > 0                 # the rule refused candidates here (a test that can fail)
    assert max_pairwise(sampled.embeds) < 0.3


def test_candidates_are_compared_with_every_kept_identity_beyond_one_chunk():
    """A proposal that repeats identities kept after the first KEPT_CHUNK ones: each repeat is refused (comparing new
    candidates with only the first chunk of kept identities would take them), and the fresh rows after them are kept.
    """
    from arc2face_core.datasets.sampling import CANDIDATE_BLOCK, KEPT_CHUNK

    fresh_blocks = KEPT_CHUNK // CANDIDATE_BLOCK + 1          # kept identities then reach past the first chunk
    repeats = CANDIDATE_BLOCK // 2
    given = []

    def propose(generator, count):
        rows = torch.randn(count, 512, generator=generator)
        if len(given) == fresh_blocks:                        # the next block opens with near-copies of the last one
            rows[:repeats] = given[-1][:repeats] + 1e-3 * rows[:repeats]
        given.append(rows.clone())
        return rows

    wanted = 100
    sampled = unique_identities(fresh_blocks * CANDIDATE_BLOCK + wanted, seed=5, propose=propose)
    assert fresh_blocks * CANDIDATE_BLOCK > KEPT_CHUNK and sampled.rejected == repeats
    fresh = given[-1][repeats:repeats + wanted].double().numpy()
    np.testing.assert_allclose(sampled.embeds[-wanted:].double().numpy(),
                               fresh / np.linalg.norm(fresh, axis=1, keepdims=True), atol=1e-6)
    kept = sampled.embeds.double().numpy()
    repeated = given[-2][:repeats].double().numpy()
    closest = (kept @ (repeated / np.linalg.norm(repeated, axis=1, keepdims=True)).T).max(axis=0)
    assert (closest > 0.99).all()                              # each repeat's original is among the kept ...
    assert np.abs(kept[-wanted:] @ kept[:-wanted].T).max() < 0.3   # ... and no repeat was kept beside it


def test_impossible_uniqueness_is_a_clear_error():
    same = lambda generator, count: torch.ones(count, 512) + 1e-3 * torch.randn(count, 512, generator=generator)  # noqa: E731
    with pytest.raises(InvalidInputError, match=r"only 1 of 5 identities .* below 0.3"):
        unique_identities(5, seed=0, propose=same)


@pytest.mark.parametrize("kwargs, message", [
    ({"count": 0}, "number of identities"), ({"threshold": 0.0}, "threshold"),
    ({"threshold": float("nan")}, "threshold"), ({"seed": -3}, "identity seed"),
])
def test_bad_sampling_inputs_are_refused(kwargs, message):
    args = dict(count=3, seed=0, threshold=0.3)
    args.update(kwargs)
    with pytest.raises(InvalidInputError, match=message):
        unique_identities(**args)


# ------------------------------------------------------------------------------------------------------------ PCA


def population(samples: int, seed: int = 0) -> torch.Tensor:
    """Face-like embeddings: a common direction plus a 40-d anisotropic spread (variances 1/k) and a little noise."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(512, 40, generator=g, dtype=torch.float64))
    scales = 1.0 / torch.arange(1, 41, dtype=torch.float64).sqrt()
    z = torch.randn(samples, 40, generator=g, dtype=torch.float64) * scales
    centre = torch.randn(512, generator=g, dtype=torch.float64)
    rows = 0.5 * centre / centre.norm() + z @ basis.T + 0.01 * torch.randn(samples, 512, generator=g,
                                                                             dtype=torch.float64)
    return rows.float()


def test_pca_fit_equals_the_covariance_eigendecomposition():
    data = population(1500)
    pca = IdentityPCA.fit(data, components=30)
    x = data.double().numpy()
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(x, rowvar=False))        # ascending
    eigenvalues, eigenvectors = eigenvalues[::-1][:30], eigenvectors[:, ::-1][:, :30]
    np.testing.assert_allclose(pca.mean.numpy(), x.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(pca.variances.numpy(), eigenvalues, rtol=1e-4)
    alignment = np.abs(np.sum(pca.components.double().numpy() * eigenvectors.T, axis=1))
    assert alignment[:10].min() > 0.999                        # same axes up to sign (distinct eigenvalues)
    assert pca.samples == 1500 and pca.rank == 30


def test_pca_draws_have_the_model_variances():
    pca = IdentityPCA.fit(population(1500), components=40)
    draws = pca.propose(torch.Generator().manual_seed(9), 20_000).double()
    centred = draws - pca.mean.double()
    along = centred @ pca.components.double().T
    np.testing.assert_allclose(along.var(dim=0).numpy(), pca.variances.double().numpy(), rtol=0.05)
    outside = centred - along @ pca.components.double()
    assert outside.abs().max() < 1e-4                           # nothing off the model's span


def test_pca_component_limits_and_the_small_sample_warning():
    with pytest.warns(UserWarning, match="only 10 embeddings"):
        assert IdentityPCA.fit(population(10)).rank == 9        # samples - 1
    with pytest.raises(InvalidInputError, match="1 to 9 components"):
        IdentityPCA.fit(population(10), components=10)
    assert IdentityPCA.fit(population(1200)).rank == 512        # at most 512
    with pytest.raises(InvalidInputError, match="at least 2"):
        IdentityPCA.fit(population(1))


def test_pca_file_roundtrip_and_refusals(tmp_path):
    pca = IdentityPCA.fit(population(1500), components=300, source={"photos": "faces/"})
    path = pca.save(tmp_path / "identity_pca.safetensors")
    assert path.stat().st_size < 700_000                         # a small file: 300 x 512 float32 and change
    again = IdentityPCA.load(path)
    assert torch.equal(again.components, pca.components) and torch.equal(again.variances, pca.variances)
    assert again.samples == 1500 and again.source == {"photos": "faces/"}
    from safetensors.torch import save_file

    save_file({"embeddings": torch.randn(3, 512)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CorruptWeightsError, match="not an identity PCA file"):
        IdentityPCA.load(tmp_path / "other.safetensors")
    skewed = {"mean": pca.mean, "components": pca.components * 2, "variances": pca.variances}
    save_file(skewed, str(tmp_path / "skewed.safetensors"), metadata={"format": "arc2face.identity_pca"})
    with pytest.raises(CorruptWeightsError, match="not orthonormal"):
        IdentityPCA.load(tmp_path / "skewed.safetensors")


def test_pca_sampler_with_the_uniqueness_rule():
    pca = IdentityPCA.fit(population(1500), components=40)
    sampled = unique_identities(40, seed=4, threshold=0.3, propose=pca.propose)
    assert max_pairwise(sampled.embeds) < 0.3 and sampled.rejected > 0   # 40 uneven axes: the rule bites
    assert torch.equal(unique_identities(40, seed=4, threshold=0.3, propose=pca.propose).embeds, sampled.embeds)


# ---------------------------------------------------------------------------------------------------------- jitter


def test_jitter_off_is_the_identity_and_on_has_the_expected_spread():
    identity = unique_identities(1, seed=10_000).embeds[0]   # not a jitter seed below: g would be the identity
    assert torch.equal(jitter_identity(identity, 0.0, 0.7, seed=3), identity)
    cosines = torch.tensor([float(jitter_identity(identity, 0.5, 0.0, seed=s) @ identity) for s in range(2000)])
    assert abs(cosines.mean().item() - 1 / math.sqrt(1 + 0.5 ** 2)) < 0.01      # 0.894
    assert cosines.std() < 0.02


def test_jitter_floor_bounds_the_cosine():
    identity = unique_identities(1, seed=10_000).embeds[0]
    vectors = [jitter_identity(identity, 3.0, 0.7, seed=s) for s in range(200)]   # unfloored cosine ~0.32
    cosines = torch.tensor([float(v @ identity) for v in vectors])
    assert cosines.min() >= 0.7 - 1e-6 and (cosines - 0.7).abs().max() < 1e-5     # every one clamped to the floor
    for seed, vector in zip(range(5), vectors):     # clamped along the great circle: same direction off the identity
        g = torch.randn(512, generator=torch.Generator().manual_seed(seed))
        off = g - (g @ identity) * identity
        side = vector - (vector @ identity) * identity
        assert float(side @ off / (side.norm() * off.norm())) > 0.9999
        torch.testing.assert_close(vector.norm(), torch.tensor(1.0))
    with pytest.raises(InvalidInputError, match="jitter floor"):
        jitter_identity(identity, 1.0, 1.5, seed=0)


# ---------------------------------------------------------------------------------------------- batches and shards


@pytest.mark.parametrize("identities, per_batch, shards", [(10, 3, 3), (7, 1, 4), (5, 2, 8), (100, 7, 1)])
def test_shards_are_disjoint_and_cover_every_batch(identities, per_batch, shards):
    batches = make_batches(identities, per_batch)
    assert [i for b in batches for i in b.identities] == list(range(identities))
    parts = [shard_batches(batches, i, shards) for i in range(shards)]
    flat = [b.index for part in parts for b in part]
    assert flat == list(range(len(batches)))                        # disjoint, in order, nothing missing
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_shard_syntax():
    assert parse_shard("3/8") == (3, 8) and parse_shard(" 0 / 1 ") == (0, 1)
    for text in ("8/8", "1", "a/b", "-1/4", "0/0"):
        with pytest.raises(InvalidInputError, match="--shard"):
            parse_shard(text)


def test_random_directions_are_standard_normal():
    rows = random_directions(torch.Generator().manual_seed(0), 4096)
    assert abs(rows.mean().item()) < 0.01 and abs(rows.std().item() - 1) < 0.01
