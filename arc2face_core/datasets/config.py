"""What a dataset is made of: the settings of a run, checked, and the part of them that fixes its pixels.

``settings()`` is what ``dataset.json`` records; a later run (a restart, another shard, a Ray worker) into the same
folder must ask for the same settings, so every file of the dataset comes from one recipe. Paths that may differ from
machine to machine (the models folder, the output folder on shared storage) are left out; the model files are named
by their place in the models layout and their size. On the CPU the number of torch threads is part of the recipe:
float sums split over another number of threads round differently (the latents move by ~1e-5, now and then a pixel
by one level), so every run of a CPU dataset uses the thread count the dataset recorded.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from ..diffusers_backend.lcm import SCHEDULERS, adds_noise, check_lcm_steps
from ..diffusers_backend.pipeline import DEFAULT_GUIDANCE, DEFAULT_SIZE, DEFAULT_STEPS
from ..errors import InvalidInputError
from .exclusion import DEFAULT_EXCLUDE_THRESHOLD
from .sampling import DEFAULT_JITTER_FLOOR, UNIQUE_THRESHOLD, check_jitter, check_threshold

DEFAULT_MAX_ATTEMPTS = 3
MAX_ATTEMPTS = 100
CROPS = ("arcface",)   # the face the identity check aligns for ArcFace
CROP_SIZE = 112        # its side (faces.analysis.CROP_SIZE, ArcFace's input)


@dataclass(frozen=True, eq=False)
class DatasetConfig:
    out: Path
    models: Path
    vae: Path
    identities: Optional[int]          # None: as many as --embeddings holds
    images_per_id: int = 4
    seed: int = 0
    identity_seed: Optional[int] = None   # None: the dataset seed
    ids_per_batch: int = 1
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    width: int = DEFAULT_SIZE
    height: int = DEFAULT_SIZE
    identity_threshold: float = UNIQUE_THRESHOLD
    pca: Optional[Path] = None
    pca_components: Optional[int] = None
    embeddings: Optional[Path] = None
    jitter: float = 0.0
    jitter_floor: float = DEFAULT_JITTER_FLOOR
    exclude: tuple[Path, ...] = ()          # real people to keep away from (embeddings files, photo folders)
    exclude_threshold: float = DEFAULT_EXCLUDE_THRESHOLD
    min_similarity: Optional[float] = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    score: bool = True
    crop: Optional[str] = None             # "arcface": write each image's aligned 112x112 face (see generation)
    keep_full: bool = True                 # with crop: also write the full image
    scheduler: str = "dpmpp_2m"            # or "lcm" (LCM speed mode, with an LCM LoRA)
    lora: Optional[Path] = None            # a UNet LoRA merged before sampling (SD1.5's LCM-LoRA)
    lora_strength: float = 1.0
    device: str = "auto"
    dtype: str = "auto"
    provider: str = "auto"
    channels_last: bool = False
    compile: bool = False
    cpu_threads: Optional[int] = None       # torch threads on the CPU (None: the dataset's, or this machine's)
    download: bool = False
    hint: Optional[torch.Tensor] = None     # prepared normal maps [1 or N, 512, 512, 3]
    pose: dict = field(default_factory=dict)
    quiet: bool = False

    @property
    def id_seed(self) -> int:
        return self.seed if self.identity_seed is None else self.identity_seed

    @property
    def mode(self) -> str:
        """The sampling mode that makes every image, as the manifest and dataset.json name it: the scheduler."""
        return self.scheduler

    @property
    def redraws(self) -> bool:
        """Whether an image can fail its check and be redrawn: below --min-similarity, or without a face to crop."""
        return self.min_similarity is not None or self.crop is not None

    @property
    def noise_steps(self) -> Optional[int]:
        """Steps of per-step noise each image draws (LCM adds noise between steps); None: the initial noise only."""
        return self.steps if adds_noise(self.scheduler) else None

    def check(self) -> "DatasetConfig":
        """Every value in its range, with a message naming the option; returns self."""
        counts = [("--images-per-id", self.images_per_id, 1, 100_000), ("--ids-per-batch", self.ids_per_batch, 1,
                                                                         100_000),
                  ("--steps", self.steps, 1, 10_000), ("--width", self.width, 8, 16_384),
                  ("--height", self.height, 8, 16_384), ("--max-attempts", self.max_attempts, 1, MAX_ATTEMPTS)]
        if self.identities is not None:
            counts.append(("--identities", self.identities, 1, 10_000_000))
        if self.cpu_threads is not None:
            counts.append(("--cpu-threads", self.cpu_threads, 1, 1024))
        for name, value, low, high in counts:
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidInputError(f"{name} must be a whole number from {low} to {high:,}, got {value!r}")
        if self.width % 8 or self.height % 8:
            raise InvalidInputError(f"--width and --height must be multiples of 8, got {self.width}x{self.height}")
        for name, value in (("--seed", self.seed), ("--identity-seed", self.id_seed)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 64:
                raise InvalidInputError(f"{name} must be a whole number from 0 to 2**64-1, got {value!r}")
        if not math.isfinite(self.guidance) or self.guidance < 0:
            raise InvalidInputError(f"--cfg must be a finite number >= 0, got {self.guidance!r}")
        check_threshold(self.identity_threshold, "--identity-threshold")
        check_threshold(self.exclude_threshold, "--exclude-threshold")
        check_jitter(self.jitter, self.jitter_floor)
        if self.min_similarity is not None:
            if not math.isfinite(self.min_similarity) or not -1 <= self.min_similarity <= 1:
                raise InvalidInputError(f"--min-similarity must be a cosine from -1 to 1, got {self.min_similarity}")
            if not self.score:
                raise InvalidInputError("--min-similarity needs the identity check: leave out --no-similarity")
        self._check_crop_and_sampling()
        if self.identities is None and self.embeddings is None:
            raise InvalidInputError("give --identities N (or --embeddings FILE with the identities to use)")
        if self.embeddings is not None and self.pca is not None:
            raise InvalidInputError("--embeddings gives the identities, --pca samples them: choose one")
        if self.pca_components is not None and self.pca is None:
            raise InvalidInputError("--pca-components needs --pca")
        return self

    def _check_crop_and_sampling(self) -> None:
        if self.crop is not None:
            if self.crop not in CROPS:
                raise InvalidInputError(f"--crop must be one of {CROPS}, got {self.crop!r}")
            if not self.score:
                raise InvalidInputError("--crop arcface writes the face the identity check aligns: leave out "
                                        "--no-similarity")
        elif not self.keep_full:
            raise InvalidInputError("--no-keep-full leaves out the full images: it needs --crop arcface, or "
                                    "nothing would be written")
        if self.scheduler not in SCHEDULERS:
            raise InvalidInputError(f"--scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if adds_noise(self.scheduler):
            check_lcm_steps(self.steps)
        if isinstance(self.lora_strength, bool) or not isinstance(self.lora_strength, (int, float)) \
                or not math.isfinite(self.lora_strength):
            raise InvalidInputError(f"--lora-strength must be a finite number, got {self.lora_strength!r}")
        if self.lora is None and self.lora_strength != 1.0:
            raise InvalidInputError("--lora-strength needs a LoRA: pass --lora FILE")

    def settings(self, count: int, device: torch.device, dtype: str, files: dict[str, str]) -> dict:
        """What fixes the pixels and the plan (see the module docstring); ``count`` is the resolved number of
        identities, ``files`` the model files by role."""
        identity = {"threshold": self.identity_threshold}
        if self.embeddings is not None:
            identity = {"sampler": "file", "file": self.embeddings.name}
        elif self.pca is not None:
            identity.update(sampler="pca", source=self.pca.name, components=self.pca_components)
        else:
            identity["sampler"] = "unique random unit vectors"
        if self.exclude:   # only then: the settings of datasets made without it stay as they were
            identity["exclude"] = {"sources": [Path(p).name for p in self.exclude],
                                   "threshold": self.exclude_threshold}
        pose = dict(self.pose)
        if "normal_maps" in pose:   # by name: the hints' own hash below says whether they are the same
            pose["normal_maps"] = [Path(p).name for p in pose["normal_maps"]]
        if self.hint is not None:
            pose["hint_sha256"] = hashlib.sha256(self.hint.float().contiguous().numpy().tobytes()).hexdigest()
        return {
            "identities": count, "images_per_id": self.images_per_id, "seed": self.seed,
            "identity_seed": self.id_seed, "identity": identity, "ids_per_batch": self.ids_per_batch,
            "steps": self.steps, "guidance_scale": self.guidance, "width": self.width, "height": self.height,
            "jitter": self.jitter, "jitter_floor": self.jitter_floor if self.jitter else None,
            "min_similarity": self.min_similarity, "max_attempts": self.max_attempts if self.redraws else 1,
            "similarity": self.score, "device": device.type, "dtype": dtype,
            "channels_last": self.channels_last, "compile": self.compile,
            "cpu_threads": self.cpu_threads if device.type == "cpu" else None, "pose": pose or None,
            "files": {role: _describe_file(path, self.models) for role, path in sorted(files.items())},
            # new keys are None when unused, so datasets made before them still match their dataset.json
            "crop": {"kind": self.crop, "size": CROP_SIZE, "keep_full": self.keep_full} if self.crop else None,
            "sampling": None if self.scheduler == "dpmpp_2m" and self.lora is None else
            {"scheduler": self.scheduler, "lora_strength": self.lora_strength if self.lora is not None else None},
        }


def _describe_file(path: str, models: Path) -> dict:
    """A model file by its place under the models folder (or its name) and its size: the same on every machine."""
    file = Path(path)
    if file.is_dir():   # a diffusers folder (the VAE's): its weights file
        file = file / "diffusion_pytorch_model.safetensors"
    try:
        name = file.resolve().relative_to(models.resolve()).as_posix()
    except ValueError:
        name = file.name
    size = file.stat().st_size if file.is_file() else None
    return {"file": name, "bytes": size}


def differences(stored: dict, wanted: dict, prefix: str = "") -> list[str]:
    """The settings that differ, as 'name: stored -> wanted' lines (nested keys joined with dots)."""
    lines = []
    for key in sorted(stored.keys() | wanted.keys()):
        a, b = stored.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            lines += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            lines.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return lines
