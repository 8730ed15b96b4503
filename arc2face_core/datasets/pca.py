"""A PCA model of ArcFace embeddings, the paper's sampler of synthetic identities (section 4.2, supplement B).

The paper fitted WebFace42M's embeddings and needed 300-400 principal components for faithful faces; that model was
not released, so this one is fitted on embeddings the user supplies (a folder of photos or a saved embeddings file).
Fit: the unit rows' mean and the principal axes of the centred rows (an SVD in float64), keeping at most
``min(samples - 1, 512)`` components with their variances (eigenvalues of the sample covariance, ``S**2 / (n - 1)``).
Draw: coefficients from ``N(0, variance)`` per component, mapped back (``mean + z @ components``); ``sampling``
normalises the rows and applies the uniqueness rule. The model is a small safetensors file (at most about 1 MiB).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import CorruptWeightsError, InvalidInputError
from ..identity.embeddings import ARCFACE_DIM, normalize

PCA_FORMAT = "arc2face.identity_pca"
MAX_COMPONENTS = ARCFACE_DIM
FEW_SAMPLES = 1000            # below this a warning says the model is rough (the paper fitted millions)
ORTHONORMAL_TOLERANCE = 1e-3


@dataclass(frozen=True)
class IdentityPCA:
    mean: torch.Tensor          # [512]
    components: torch.Tensor    # [C, 512], orthonormal rows, strongest first
    variances: torch.Tensor     # [C], decreasing
    samples: int                # how many embeddings it was fitted on
    source: dict = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, embeds: torch.Tensor, components: int | None = None, source: dict | None = None) -> "IdentityPCA":
        """Fit on ``embeds`` [M, 512] (rows are normalised first); ``components`` defaults to the most allowed."""
        rows = normalize(embeds).double()
        samples = rows.shape[0]
        if samples < 2:
            raise InvalidInputError("a PCA of identities needs at least 2 embeddings (the paper fitted millions)")
        most = min(samples - 1, MAX_COMPONENTS)
        if components is None:
            components = most
        if isinstance(components, bool) or not isinstance(components, int) or not 1 <= components <= most:
            raise InvalidInputError(f"the PCA can have 1 to {most} components with {samples} embeddings (at most "
                                    f"samples - 1 and {MAX_COMPONENTS}), got {components!r}")
        if samples < FEW_SAMPLES:
            warnings.warn(f"fitting the identity PCA on only {samples} embeddings: the paper fitted WebFace42M and "
                          "needed 300-400 components; sampled identities will stay close to these people",
                          stacklevel=2)
        mean = rows.mean(dim=0)
        _, singular, axes = torch.linalg.svd(rows - mean, full_matrices=False)
        axes = axes[:components]
        # One sign per axis, so the same data always gives the same file: largest coordinate positive.
        signs = torch.sign(axes.gather(1, axes.abs().argmax(dim=1, keepdim=True)))
        axes = axes * signs
        variances = singular[:components] ** 2 / (samples - 1)
        return cls(mean.float(), axes.float().contiguous(), variances.float(), samples, dict(source or {}))

    def propose(self, generator: torch.Generator, count: int) -> torch.Tensor:
        """``count`` unnormalised draws [count, 512]: ``mean + z @ components``, ``z ~ N(0, variances)``."""
        z = torch.randn(count, self.rank, generator=generator, dtype=torch.float32) * self.variances.sqrt()
        return self.mean + z @ self.components

    def to_bytes(self) -> bytes:
        """The PCA file's bytes (safetensors; the same in every process, see ``checkpoints.safetensors_bytes``)."""
        from ..checkpoints import safetensors_bytes

        tensors = {"mean": self.mean.contiguous(), "components": self.components.contiguous(),
                   "variances": self.variances.contiguous()}
        return safetensors_bytes(tensors, {"format": PCA_FORMAT, "samples": str(self.samples),
                                           "source": json.dumps(self.source)})

    def save(self, path: str | os.PathLike) -> Path:
        from .store import write_atomic

        path = Path(path)
        write_atomic(path, self.to_bytes())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "IdentityPCA":
        from ..checkpoints import check_finite, load_state_dict
        from ..identity.files import read_metadata

        path = Path(path)
        tensors = load_state_dict(path)
        metadata = read_metadata(path)
        hint = "Fit it again with --pca PHOTOS_OR_EMBEDDINGS."
        missing = {"mean", "components", "variances"} - tensors.keys()
        if missing or metadata.get("format") != PCA_FORMAT:
            raise CorruptWeightsError(f"{path} is not an identity PCA file (missing {sorted(missing)} or format "
                                      f"{metadata.get('format')!r}). {hint}")
        check_finite(tensors, path)
        mean, axes, variances = (tensors[k].float() for k in ("mean", "components", "variances"))
        rank = axes.shape[0] if axes.ndim == 2 else -1
        if mean.shape != (ARCFACE_DIM,) or axes.ndim != 2 or axes.shape[1] != ARCFACE_DIM \
                or not 1 <= rank <= MAX_COMPONENTS or variances.shape != (rank,) or (variances < 0).any():
            raise CorruptWeightsError(f"{path} holds PCA tensors of the wrong shapes: mean {list(mean.shape)}, "
                                      f"components {list(axes.shape)}, variances {list(variances.shape)}. {hint}")
        if (axes @ axes.T - torch.eye(rank)).abs().max() > ORTHONORMAL_TOLERANCE:
            raise CorruptWeightsError(f"{path}: the PCA components are not orthonormal. {hint}")
        try:
            samples, source = int(metadata.get("samples", "0")), json.loads(metadata.get("source", "{}"))
        except ValueError as exc:
            raise CorruptWeightsError(f"{path}: unreadable PCA metadata ({exc}). {hint}") from exc
        return cls(mean, axes, variances, samples, source if isinstance(source, dict) else {})

