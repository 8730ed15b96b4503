"""The paper's identity check: the ArcFace cosine similarity of each generated image to the identity it was made of.

As in the paper's evaluation, each output goes through the same face analysis as the input photos (detection,
largest face, 5-point alignment, Arc2Face's own ``arcface.onnx``, L2-normalised) and is compared with the identity's
unit embedding by a dot product. An output in which no face is found scores ``NO_FACE_SCORE`` (-1.0, the lowest
cosine there is) and is named in the report: it is a result to filter out, not a crash.

Images pair with identities as the Arc2Face Sampler lays them out: N identities x k images, rows i*k .. i*k+k-1
belong to identity i; a single identity is compared with every image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..batching import IdentityLayout, plural
from ..errors import InvalidInputError
from ..identity.embeddings import normalize

NO_FACE_SCORE = -1.0


@dataclass(frozen=True)
class IdentityScores:
    scores: list[float]        # one per image; NO_FACE_SCORE where no face was found
    identities: list[int]      # the 0-based identity each image was compared with
    found: list[bool]          # whether a face was found in each image
    crops: Optional[list[Optional[np.ndarray]]] = None   # with keep_crops: each image's aligned 112x112 BGR face

    @property
    def no_face(self) -> list[int]:
        """0-based indices of the images without a face."""
        return [i for i, found in enumerate(self.found) if not found]

    def report(self) -> str:
        """A readable summary: one line per image, then the statistics and the images without a face."""
        lines = ["Identity similarity (ArcFace cosine of each image to its identity; 1 = identical):"]
        for index, (score, identity, found) in enumerate(zip(self.scores, self.identities, self.found)):
            value = f"{score:.3f}" if found else f"no face found ({NO_FACE_SCORE})"
            lines.append(f"  image {index + 1}, identity {identity + 1}: {value}")
        faces = [s for s, found in zip(self.scores, self.found) if found]
        summary = f"{plural(len(self.scores), 'image')}, {len(faces)} with a face"
        if faces:
            mean = sum(faces) / len(faces)
            spread = math.sqrt(sum((s - mean) ** 2 for s in faces) / len(faces))
            summary += f": mean {mean:.3f}, std {spread:.3f}, min {min(faces):.3f}, max {max(faces):.3f}"
        lines.append(summary)
        if self.no_face:
            lines.append(f"No face found in {plural(len(self.no_face), 'image')}: "
                         f"{', '.join(str(i + 1) for i in self.no_face)} (scored {NO_FACE_SCORE}).")
        return "\n".join(lines)


def identity_of_images(images: int, identities: int, images_per_id: int) -> list[int]:
    """The identity index of each of ``images`` images (see the module docstring for the layout)."""
    layout = IdentityLayout(identities, images_per_id)
    if images == layout.rows:
        return [row // images_per_id for row in range(images)]
    if identities == 1:
        return [0] * images
    raise InvalidInputError(
        f"{plural(images, 'image')} cannot be paired with {layout.describe()} (= {layout.rows} images): set "
        f"images_per_id to the Arc2Face Sampler's, or give one identity to compare every image with")


def score_identities(analyzer: Any, images: Any, embeds: torch.Tensor, images_per_id: int = 1,
                     keep_crops: bool = False) -> IdentityScores:
    """Score each image of ``images`` (a ComfyUI IMAGE or uint8 BGR arrays) against its identity in ``embeds``;
    ``keep_crops`` also returns the aligned face each score was computed from (None where there is no face)."""
    targets = normalize(embeds)
    faces = analyzer.analyse_where_found(images)
    owners = identity_of_images(len(faces.found), targets.shape[0], images_per_id)
    scores, crops, next_found = [], [], 0
    for owner, has_face in zip(owners, faces.found):
        if has_face:
            scores.append(float(faces.embeds[next_found] @ targets[owner]))
            crops.append(faces.crops[next_found])
            next_found += 1
        else:
            scores.append(NO_FACE_SCORE)
            crops.append(None)
    return IdentityScores(scores, owners, faces.found, crops if keep_crops else None)


def check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) \
            or not -1.0 <= threshold <= 1.0:
        raise InvalidInputError(f"threshold must be a cosine similarity from -1 to 1, got {threshold!r}")
    return float(threshold)


# A cosine of float32 unit vectors is off by a few units in the last place: an image scored against its own embedding
# gets 0.99999994, not 1.0. Scores this close below the threshold pass it, so threshold 1.0 keeps identical faces.
SCORE_TOLERANCE = 1e-6


def filter_by_scores(images: Sequence[torch.Tensor], scores: Sequence[float],
                     threshold: float) -> tuple[torch.Tensor, list[int]]:
    """The images whose score is at least ``threshold`` (less SCORE_TOLERANCE, float32's rounding of a cosine; an
    empty batch when none is) and their 0-based indices.

    ``images`` is a list of IMAGE batches [B, H, W, C] of one size (ComfyUI hands a list input over whole), taken in
    order; ``scores`` holds one score per image.
    """
    threshold = check_threshold(threshold)
    batches = [batch for batch in images]
    if not batches or not all(isinstance(b, torch.Tensor) and b.ndim == 4 for b in batches):
        raise InvalidInputError("images must be one or more IMAGE batches [B, H, W, C]")
    sizes = {tuple(b.shape[1:]) for b in batches}
    if len(sizes) > 1:
        raise InvalidInputError(f"the images come in different sizes {sorted(sizes)}: filter each size on its own")
    for index, score in enumerate(scores):
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise InvalidInputError(f"score {index + 1} is {score!r}, not a finite number: connect the scores of "
                                    "Identity Similarity")
    total = sum(b.shape[0] for b in batches)
    if total == 0:
        raise InvalidInputError(f"images is an empty batch (0 images, {plural(len(scores), 'score')}): there is "
                                "nothing to filter; check the node that made the images")
    if total != len(scores):
        raise InvalidInputError(f"{plural(total, 'image')} but {plural(len(scores), 'score')}: connect the scores "
                                "Identity Similarity made for these same images")
    everything = torch.cat(batches) if len(batches) > 1 else batches[0]
    kept = [i for i, score in enumerate(scores) if score >= threshold - SCORE_TOLERANCE]
    return everything[kept], kept
