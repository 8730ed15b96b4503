"""The command line's Reference Adapter options: ``--reference PHOTO`` keeps the look of a photo.

As the official demo: the photo's face is FFHQ-aligned (68 landmarks from antelopev2's 1k3d68, ``image_align``) at the
image size, encoded by the VAE, and steers the images through the Reference Adapter
(``<models>/arc2face/ref_adapter/pytorch_lora_weights.safetensors``). The identity still comes from ``--image`` and
friends: for the demo's use, pass the same photo to both.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InvalidInputError, NoFaceError
from ..weights import ModelRoots

DEFAULT_STRENGTH = 0.8   # the official demo's slider default


def add_reference_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reference (the Arc2Face Reference Adapter, <models>/arc2face/ref_adapter/)")
    group.add_argument("--reference", action="append", type=Path, metavar="PHOTO",
                       help="keep the look of this photo (hair, skin, lighting, background); its face is FFHQ-aligned "
                            "at the image size. Repeat it once per identity to give each identity its own")
    group.add_argument("--reference-strength", type=float, default=None, metavar="S",
                       help=f"the Reference Adapter's LoRA scale, 0..1 (default: {DEFAULT_STRENGTH})")


def reference_from_args(args: argparse.Namespace, roots: ModelRoots, count: int,
                        read_photo: Callable[[Path], np.ndarray]):
    """(ReferencePhotos or None, settings entry) for ``count`` identities; photos are read by ``read_photo`` (uint8
    RGB) and aligned at max(width, height)."""
    from ..faces.align import align_faces
    from ..faces.analysis import load_face_analyzer
    from ..faces.landmarks import load_landmark_model
    from ..faces.providers import resolve_providers
    from ..reference.diffusers_unet import ReferencePhotos
    from ..reference.lora import check_strength, load_reference_lora
    from ..weights import REFERENCE_ADAPTER, find_weight

    if not args.reference:
        if args.reference_strength is not None:
            raise InvalidInputError("--reference-strength needs a reference photo: pass --reference")
        return None, {}
    strength = check_strength(DEFAULT_STRENGTH if args.reference_strength is None else args.reference_strength)
    if len(args.reference) not in (1, count):
        raise InvalidInputError(f"{len(args.reference)} --reference photos for {count} identities: give 1 (for every "
                                f"identity) or {count} (one per identity)")
    lora = load_reference_lora(find_weight(REFERENCE_ADAPTER, roots.arc2face, download=args.download))
    providers = resolve_providers(args.provider)
    analyzer = load_face_analyzer(roots, providers, download=args.download)
    landmarks = load_landmark_model(roots, providers)
    size = max(args.width, args.height)
    aligned = []
    for path in args.reference:   # one at a time: photos differ in size, and an error names the file
        try:
            aligned.append(align_faces([np.ascontiguousarray(read_photo(path)[..., ::-1])], analyzer, landmarks,
                                       args.face, size))
        except NoFaceError as exc:
            raise NoFaceError(f"{path}: {exc}") from None
    info = {"photos": [str(p) for p in args.reference], "strength": strength, "aligned_size": size,
            "file": lora.source}
    return ReferencePhotos(lora, np.concatenate(aligned), strength), info
