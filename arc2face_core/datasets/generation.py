"""Making the batches of a dataset: generate, check each image's identity, redraw or drop, write, record.

One batch = ``ids_per_batch`` identities x ``images_per_id`` images, generated as one pipeline batch (the UNet sees
2 x that many rows with classifier-free guidance). Image j of identity i starts from its own seed's noise
(``seeds.image_noise``) and, with ``--id-jitter``, its own vector near the identity. With ``--min-similarity``, the
images of a batch that score below it are generated again together with their next attempt's seed, up to
``--max-attempts`` tries in all; an image that never passes is dropped: it gets no file and its manifest row says
``dropped`` with every try's score. With ``--crop arcface`` each kept image's aligned 112x112 face, the crop the
identity check computed (detected and aligned once), is written too; there an image without a face fails its check
like one below ``--min-similarity`` (redrawn while tries remain, then dropped). The batch's record (its manifest rows)
is written after its images, which makes it done (see ``store``); the PNGs are encoded on background threads while
the next batch is generated.

In the LCM mode (``--scheduler lcm`` with an LCM LoRA) each image also draws the noise LCM adds between steps from
its own seed (``seeds.image_noise``), so it too can be made again alone.

Manifest row: ``identity``, ``image`` (0-based indices), ``file`` (relative to the dataset folder; null when
dropped or under ``--no-keep-full``), ``crop`` (with ``--crop``: the aligned face's file, null when dropped),
``seed`` (of the kept or last attempt), ``attempt``, ``similarity`` (ArcFace cosine of the image to its identity;
-1.0 without a face; null with ``--no-similarity``), ``dropped`` (and, when true, ``dropped_because``: ``"no face"``
or ``"below --min-similarity"``), ``tries`` (every attempt's score), ``batch``, ``mode`` (the sampler that made it:
``dpmpp_2m`` or ``lcm``), with jitter ``jitter_similarity`` (the cosine of the image's vector to its identity), and
for each file written its hash, ``sha256`` (the full image's PNG) and ``crop_sha256`` (the crop's): what
``--verify`` checks.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Optional

import numpy as np
import torch

from ..diffusers_backend.devices import resolve_device
from ..faces.similarity import score_identities
from ..weights import ModelRoots
from .config import DatasetConfig
from .plan import Batch
from .progress import RunStats
from .sampling import jitter_identity
from .seeds import image_noise, image_seed
from .store import DatasetStore

Row = tuple[int, int, int]   # identity, image, attempt
WRITER_THREADS = 2           # PNG encoders working while the device makes the next batch


class DatasetMaker:
    """A loaded pipeline (and face analyzer) making the batches of one dataset."""

    def __init__(self, config: DatasetConfig, identities: torch.Tensor, store: DatasetStore, pipeline,
                 analyzer=None) -> None:
        self.config, self.identities, self.store = config, identities, store
        self.pipeline, self.analyzer = pipeline, analyzer
        self.channels = pipeline.vae.config.latent_channels
        self.latent_hw = pipeline.latent_size(config.width, config.height)

    def _targets(self, rows: list[Row]) -> tuple[torch.Tensor, list[Optional[float]]]:
        """The vector each image is generated from, and its cosine to the identity (None without jitter)."""
        c = self.config
        vectors, cosines = [], []
        for identity, image, attempt in rows:
            base = self.identities[identity]
            if c.jitter:
                vector = jitter_identity(base, c.jitter, c.jitter_floor,
                                         image_seed(c.seed, identity, image, attempt, "jitter"))
                cosines.append(float(vector @ base))
            else:
                vector = base
                cosines.append(None)
            vectors.append(vector)
        return torch.stack(vectors), cosines

    def _generate(self, rows: list[Row]) -> tuple[np.ndarray, list[int], list[Optional[float]]]:
        c = self.config
        seeds = [image_seed(c.seed, identity, image, attempt) for identity, image, attempt in rows]
        noise = torch.cat([image_noise(seed, self.channels, *self.latent_hw, c.noise_steps) for seed in seeds])
        targets, cosines = self._targets(rows)
        hint = c.hint
        if hint is not None and hint.shape[0] > 1:
            hint = hint[[identity for identity, _, _ in rows]]
        control = {k: c.pose[k] for k in ("control_scale", "control_start", "control_end") if k in c.pose}
        images = self.pipeline.generate(targets, 1, c.steps, c.guidance, c.width, c.height, noise=noise,
                                        hint=hint, **control)
        return images, seeds, cosines

    def _scores(self, images: np.ndarray, rows: list[Row]) -> tuple[list[Optional[float]], list[Optional[np.ndarray]]]:
        """Each image's identity score and (with --crop) its aligned face as RGB, None where no face was found."""
        if self.analyzer is None:
            return [None] * len(rows), [None] * len(rows)
        bgr = [np.ascontiguousarray(image[..., ::-1]) for image in images]
        owners = self.identities[[identity for identity, _, _ in rows]]
        result = score_identities(self.analyzer, bgr, owners, 1, keep_crops=self.config.crop is not None)
        crops = result.crops or [None] * len(rows)
        return result.scores, [None if crop is None else np.ascontiguousarray(crop[..., ::-1]) for crop in crops]

    def _failure(self, score: Optional[float], crop: Optional[np.ndarray]) -> Optional[str]:
        """Why an image fails its check (None: it passes)."""
        c = self.config
        if c.crop is not None and crop is None:
            return "no face"
        if c.min_similarity is not None and score < c.min_similarity:
            return "below --min-similarity"
        return None

    def make_batch(self, batch: Batch) -> tuple[list[dict], int, dict]:
        """Generate, check and redraw one batch: its manifest rows, the images generated and the pixels to write
        ({(identity, image): (full image or None, crop or None)}, uint8 RGB, of the kept images)."""
        c = self.config
        pending: list[Row] = [(i, j, 0) for i in batch.identities for j in range(c.images_per_id)]
        tries: dict[tuple[int, int], list] = {}
        finished: dict[tuple[int, int], dict] = {}
        kept: dict[tuple[int, int], tuple[Optional[np.ndarray], Optional[np.ndarray]]] = {}
        generated = 0
        while pending:
            images, seeds, cosines = self._generate(pending)
            scores, crops = self._scores(images, pending)
            generated += len(pending)
            redo = []
            for (identity, image, attempt), pixels, seed, score, crop, cosine in zip(pending, images, seeds, scores,
                                                                                     crops, cosines):
                tries.setdefault((identity, image), []).append(score)
                failure = self._failure(score, crop)
                if failure is not None and attempt + 1 < c.max_attempts:
                    redo.append((identity, image, attempt + 1))
                    continue
                row = {"identity": identity, "image": image, "file": None, "seed": seed, "attempt": attempt,
                       "similarity": score, "dropped": failure is not None, "tries": tries[(identity, image)],
                       "batch": batch.index, "mode": c.mode}
                if c.crop is not None:
                    row["crop"] = None
                if failure is not None:
                    row["dropped_because"] = failure
                if cosine is not None:
                    row["jitter_similarity"] = cosine
                if failure is None:
                    if c.keep_full:
                        row["file"] = self.store.relative_file(identity, image)
                    if c.crop is not None:
                        row["crop"] = self.store.crop_relative_file(identity, image)
                    kept[(identity, image)] = (pixels if c.keep_full else None, crop)
                finished[(identity, image)] = row
            pending = redo
        return [finished[key] for key in sorted(finished)], generated, kept

    def run(self, batches: list[Batch], advance: Optional[Callable[[int], None]] = None) -> RunStats:
        """Every batch of ``batches`` not done yet; ``advance(n)`` after each batch with its image count.

        PNG encoding runs on ``WRITER_THREADS`` threads while the next batch is generated; a batch's record is
        written only once all its images are (see ``store``), so a kill at any moment loses nothing recorded."""
        stats = RunStats()
        start = time.perf_counter()
        writing: Optional[tuple[Batch, list[dict], dict[tuple[str, int, int], Future]]] = None

        def finish(batch: Batch, rows: list[dict], futures: dict[tuple[str, int, int], Future]) -> None:
            hashes = {key: future.result() for key, future in futures.items()}   # a failed write (disk full...)
            for row in rows:                                                    # stops the run here, unrecorded
                if row["file"] is not None:
                    row["sha256"] = hashes[("file", row["identity"], row["image"])]
                if row.get("crop") is not None:
                    row["crop_sha256"] = hashes[("crop", row["identity"], row["image"])]
            self.store.finish_batch(batch.index, rows)
            if advance is not None:
                advance(len(rows))

        with ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="arc2face-png") as pool:
            for batch in batches:
                if self.store.batch_done(batch.index):
                    continue
                self.store.begin_batch(batch.identities)
                rows, generated, kept = self.make_batch(batch)
                if writing is not None:
                    finish(*writing)
                futures = {("file", *key): pool.submit(self.store.write_image, *key, full)
                           for key, (full, _) in kept.items() if full is not None}
                futures.update({("crop", *key): pool.submit(self.store.write_crop, *key, crop)
                                for key, (_, crop) in kept.items() if crop is not None})
                writing = (batch, rows, futures)
                stats.batches += 1
                stats.generated += generated
                stats.rows += rows
            if writing is not None:
                finish(*writing)
        stats.seconds = time.perf_counter() - start
        return stats


def load_face_analyzer(config: DatasetConfig):
    from ..faces.analysis import load_face_analyzer as load
    from ..faces.providers import resolve_providers

    return load(ModelRoots.under(config.models), resolve_providers(config.provider), download=config.download)


def load_maker(config: DatasetConfig, identities: torch.Tensor, store: DatasetStore):
    """The pipeline and the face analyzer for ``config``, ready to make batches (also run inside Ray workers)."""
    from ..diffusers_backend.pipeline import Arc2FacePipeline

    device, dtype = resolve_device(config.device, config.dtype)
    analyzer = load_face_analyzer(config) if config.score else None
    pipeline = Arc2FacePipeline.load(ModelRoots.under(config.models), config.vae, device=device, dtype=dtype,
                                     download=config.download, controlnet=config.hint is not None,
                                     vae_encoder=False)
    pipeline.scheduler_name = config.scheduler
    if config.lora is not None:   # merged before the layout change and compile below, as generate does
        from ..diffusers_backend.lora import apply_lora

        apply_lora(pipeline.unet, config.lora, config.lora_strength)
    pipeline.optimize(channels_last=config.channels_last, compile=config.compile)
    return DatasetMaker(config, identities, store, pipeline, analyzer)
