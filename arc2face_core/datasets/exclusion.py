"""No real people: synthetic identities kept away from a set of real ones (``--exclude-identities``).

The excluded set is the people a model trained on the dataset will be evaluated on (LFW, CFP-FP, AgeDB...): given as
embeddings files (identities.safetensors, Save Embeddings, embeddings.pt) or folders of photos, embedded with the
face path every photo goes through (detection, alignment, ArcFace; the largest face of each photo). A sampled identity
whose cosine to any excluded embedding reaches ``--exclude-threshold`` (0.3 by default: the paper's rule between
synthetic identities, section 4.2) is refused and the next proposal takes its place (``sampling.unique_identities``).
Given identities (``--embeddings``) cannot be redrawn: one that close is an error naming it.

The comparisons are matrix products, the excluded set in chunks of ``EXCLUDED_CHUNK`` rows so memory stays bounded
(4096 candidates x 8192 rows of float32 = 128 MiB): 100,000 candidates against 100,000 excluded embeddings are
5 x 10^12 multiply-adds, about 4 minutes on two shared CPU cores (bench/exclusion.py); they run on the GPU when torch
sees one.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..errors import InvalidInputError
from ..identity.embeddings import ARCFACE_DIM, normalize
from .sampling import UNIQUE_THRESHOLD, check_threshold

DEFAULT_EXCLUDE_THRESHOLD = UNIQUE_THRESHOLD
EXCLUDED_CHUNK = 8192
CANDIDATE_CHUNK = 4096


@dataclass(frozen=True)
class ExcludedSet:
    embeds: torch.Tensor                      # [M, 512] unit rows, on the device the comparisons run on
    threshold: float = DEFAULT_EXCLUDE_THRESHOLD
    sources: list[dict] = field(default_factory=list)   # per source: its name, how many embeddings, photos without a face

    def to(self, device: str | torch.device) -> "ExcludedSet":
        return ExcludedSet(self.embeds.to(device), self.threshold, self.sources)

    def closest(self, rows: torch.Tensor) -> torch.Tensor:
        """[B]: each unit row's largest cosine to the excluded set."""
        rows = rows.to(self.embeds.device, torch.float32)
        best = torch.full((rows.shape[0],), -math.inf, device=rows.device)
        for low in range(0, rows.shape[0], CANDIDATE_CHUNK):
            part = rows[low:low + CANDIDATE_CHUNK]
            for start in range(0, self.embeds.shape[0], EXCLUDED_CHUNK):
                sims = part @ self.embeds[start:start + EXCLUDED_CHUNK].T
                best[low:low + part.shape[0]] = torch.maximum(best[low:low + part.shape[0]], sims.max(dim=1).values)
        return best

    def info(self) -> dict:
        """What the identities file's metadata records about the set (its size, sources and rule)."""
        return {"threshold": self.threshold, "count": int(self.embeds.shape[0]), "sources": self.sources}


PhotoEmbedder = Callable[[Path], tuple[torch.Tensor, list[Path]]]   # folder -> (embeddings, photos without a face)


def load_excluded(sources: Sequence[Path], threshold: float, embed_folder: PhotoEmbedder) -> ExcludedSet:
    """The excluded set from embeddings files and photo folders (``embed_folder``: ``identities``' photo path)."""
    from ..identity.files import load_embeddings

    threshold = check_threshold(threshold, "--exclude-threshold")
    rows, described = [], []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            embeds, skipped = embed_folder(source)
            if skipped:
                print(f"--exclude-identities: no face in {len(skipped)} photos of {source}, e.g. {skipped[0]}; "
                      f"excluding the other {embeds.shape[0]}", file=sys.stderr)
            described.append({"photos": source.name, "embeddings": int(embeds.shape[0]),
                              "without_face": len(skipped)})
        elif source.is_file():
            embeds, _ = load_embeddings(source)
            described.append({"file": source.name, "embeddings": int(embeds.shape[0])})
        else:
            raise InvalidInputError(f"--exclude-identities {source} does not exist: give an embeddings file "
                                    "(identities.safetensors, embeddings.pt) or a folder of photos")
        rows.append(embeds)
    if not rows:
        raise InvalidInputError("--exclude-identities needs at least one file or folder")
    embeds = normalize(torch.cat(rows).float())
    if embeds.ndim != 2 or embeds.shape[1] != ARCFACE_DIM:
        raise InvalidInputError(f"excluded embeddings must be [M, {ARCFACE_DIM}], got {list(embeds.shape)}")
    return ExcludedSet(embeds, threshold, described)


def check_given(identities: torch.Tensor, excluded: ExcludedSet) -> float:
    """Given identities are used as they are: refuse them when any is within the threshold of the excluded set;
    returns their largest cosine to it."""
    closest = excluded.closest(normalize(identities.float())).cpu()
    near = (closest >= excluded.threshold).nonzero().flatten().tolist()
    if near:
        listed = ", ".join(f"{i} ({closest[i]:.3f})" for i in near[:5])
        raise InvalidInputError(f"{len(near)} of the given identities (--embeddings) are within "
                                f"--exclude-threshold {excluded.threshold} of the excluded identities: rows {listed}"
                                f"{' ...' if len(near) > 5 else ''}. Remove them, or sample identities instead (leave "
                                "out --embeddings) so that these are redrawn.")
    return float(closest.max())
