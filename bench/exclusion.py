"""Time of ``dataset --exclude-identities`` at scale: N sampled identities kept away from M excluded embeddings.

A script, not a test: it reports, it asserts nothing. It times the identity sampler alone and with the exclusion
(the same seed, so the same candidates up to the first refused one), on this machine's device (a GPU if torch sees
one), and the excluded set's closeness alone, for N candidates against M rows::

    python bench/exclusion.py --identities 100000 --excluded 100000

The excluded set here is M random unit vectors plus, so that the rule really refuses some, the first 100 identities
the seed would give; the figure that matters is the matrix products (N x M x 512 multiply-adds), which do not depend
on what the rows hold.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch

    from arc2face_core.datasets.exclusion import ExcludedSet
    from arc2face_core.datasets.sampling import unique_identities

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--identities", type=int, default=100_000)
    parser.add_argument("--excluded", type=int, default=100_000)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    plain = unique_identities(args.identities, seed=0, device=device)
    plain_s = time.perf_counter() - start
    rows = torch.randn(args.excluded, 512, generator=torch.Generator().manual_seed(1))
    rows[:100] = plain.embeds[:100]
    excluded = ExcludedSet(rows / rows.norm(dim=1, keepdim=True)).to(device)
    start = time.perf_counter()
    excluded.closest(plain.embeds)
    if device == "cuda":
        torch.cuda.synchronize()
    closest_s = time.perf_counter() - start
    start = time.perf_counter()
    sampled = unique_identities(args.identities, seed=0, device=device, exclude=excluded.closest)
    with_s = time.perf_counter() - start
    print(json.dumps({"identities": args.identities, "excluded": args.excluded, "device": device,
                      "torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
                      "sampler_s": round(plain_s, 2), "sampler_with_exclusion_s": round(with_s, 2),
                      "closeness_of_N_identities_s": round(closest_s, 2), "refused_as_excluded": sampled.excluded,
                      "candidates": sampled.candidates, "exclude_max_similarity": round(sampled.exclude_max_similarity, 4)}))


if __name__ == "__main__":
    main()
