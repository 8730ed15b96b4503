"""The identities of a dataset: given in a file, or sampled (unique random vectors, or a PCA of real embeddings).

Sampled identities are published once in ``identities.safetensors`` (first writer wins, see ``store``); every later
run, shard or worker reads that file, so all of them use bit-identical identities even where float arithmetic on
another machine could have tipped a borderline uniqueness decision.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..errors import InvalidInputError, NoFaceError
from ..identity.files import embeddings_bytes, load_embeddings, read_metadata
from .config import DatasetConfig
from .exclusion import ExcludedSet, check_given, load_excluded
from .pca import PCA_FORMAT, IdentityPCA
from .sampling import unique_identities
from .store import IDENTITIES_FILE, PCA_FILE, publish

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

AnalyzerFactory = Callable[[], object]   # loads the face analyzer only when photos must be embedded


def embed_photo_folder(folder: Path, analyzer, option: str = "--pca") -> tuple[torch.Tensor, list[Path]]:
    """The largest face's embedding of every photo under ``folder`` (subfolders too), and the photos without one;
    ``option`` names the folder's option in errors."""
    from ..images import read_rgb_file

    photos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    if not photos:
        raise InvalidInputError(f"{option} {folder}: no photos ({', '.join(PHOTO_SUFFIXES)}) in this folder")
    rows, skipped = [], []
    for path in photos:   # one at a time: photos differ in size
        bgr = np.ascontiguousarray(read_rgb_file(path)[..., ::-1])
        embeds, found = analyzer.embed_where_found([bgr])
        (rows.append(embeds) if found[0] else skipped.append(path))
    if not rows:
        raise NoFaceError(f"{option} {folder}: no face found in any of its {len(photos)} photos")
    return torch.cat(rows), skipped


def pca_from_source(source: Path, components: int | None, analyzer_factory: AnalyzerFactory) -> IdentityPCA:
    """A saved PCA file as it is, or a PCA fitted on a folder of photos or an embeddings file."""
    if source.is_dir():
        embeds, skipped = embed_photo_folder(source, analyzer_factory())
        if skipped:
            print(f"--pca: no face in {len(skipped)} photos, e.g. {skipped[0]}; fitted on the other "
                  f"{embeds.shape[0]}", file=sys.stderr)
        return IdentityPCA.fit(embeds, components, {"photos": str(source), "without_face": len(skipped)})
    if not source.is_file():
        raise InvalidInputError(f"--pca {source} does not exist: give a folder of photos, an embeddings file or a "
                                f"saved PCA ({PCA_FILE})")
    if source.suffix == ".safetensors" and read_metadata(source).get("format") == PCA_FORMAT:
        if components is not None:
            raise InvalidInputError(f"--pca {source} is a fitted PCA; --pca-components only applies when fitting")
        return IdentityPCA.load(source)
    embeds, _ = load_embeddings(source)
    return IdentityPCA.fit(embeds, components, {"embeddings": str(source)})


def _excluded(config: DatasetConfig, analyzer_factory: AnalyzerFactory) -> Optional[ExcludedSet]:
    """The excluded real people (``--exclude-identities``), or None; the analyzer loads only for photo folders."""
    if not config.exclude:
        return None

    def embed(folder: Path) -> tuple[torch.Tensor, list[Path]]:
        return embed_photo_folder(folder, analyzer_factory(), option="--exclude-identities")

    return load_excluded(config.exclude, config.exclude_threshold, embed)


def _sample(config: DatasetConfig, out: Path, analyzer_factory: AnalyzerFactory) -> tuple[torch.Tensor, dict]:
    excluded = _excluded(config, analyzer_factory)
    if config.embeddings is not None:
        embeds, source = load_embeddings(config.embeddings)
        if config.identities is not None and config.identities != embeds.shape[0]:
            raise InvalidInputError(f"--identities {config.identities} but {config.embeddings} holds "
                                    f"{embeds.shape[0]} identities: leave out --identities to use them all")
        info = {"sampler": "file", "file": str(config.embeddings), "source": source}
        if excluded is not None:
            info["exclude"] = dict(excluded.info(), refused=0, max_similarity=check_given(embeds, excluded))
        return embeds, info
    info = {"identity_seed": config.id_seed, "threshold": config.identity_threshold}
    propose, info["sampler"] = None, "unique random unit vectors"
    if config.pca is not None:
        pca = pca_from_source(config.pca, config.pca_components, analyzer_factory)
        publish(out / PCA_FILE, pca.to_bytes())   # kept beside the dataset for reuse (--pca DIR/identity_pca...)
        propose = pca.propose
        info.update(sampler="pca", pca_components=pca.rank, pca_samples=pca.samples, pca_source=pca.source)
    device = "cuda" if torch.cuda.is_available() else "cpu"   # only the comparisons; the draws stay on the CPU
    if excluded is not None:
        excluded = excluded.to(device)
    sampled = unique_identities(config.identities, config.id_seed, config.identity_threshold,
                                **({"propose": propose} if propose else {}), device=device,
                                exclude=excluded.closest if excluded is not None else None,
                                exclude_threshold=config.exclude_threshold)
    info.update(candidates=sampled.candidates, rejected=sampled.rejected, max_similarity=sampled.max_similarity)
    if excluded is not None:
        info["exclude"] = dict(excluded.info(), refused=sampled.excluded,
                               max_similarity=sampled.exclude_max_similarity)
    return sampled.embeds, info


def prepare_identities(config: DatasetConfig, out: Path,
                       analyzer_factory: AnalyzerFactory) -> tuple[torch.Tensor, dict]:
    """The dataset's identities [N, 512]: read from ``out/identities.safetensors``, or made and published there."""
    path = out / IDENTITIES_FILE
    if not path.is_file():
        embeds, source = _sample(config, out, functools.cache(analyzer_factory))   # loaded once, if at all
        publish(path, embeddings_bytes(embeds, source))
    embeds, source = load_embeddings(path)
    if config.identities is not None and embeds.shape[0] != config.identities:
        raise InvalidInputError(f"{path} holds {embeds.shape[0]} identities but --identities is {config.identities}: "
                                "use the same settings to continue this dataset, or another --out")
    return embeds, source
