"""``--pose-photo``: the pose hint from a reference photo, as the reference demo makes it, for the command line.

SMIRK reads the FLAME parameters of the FFHQ-aligned pose photo (pose, jaw, expression, eyelids, camera and its crop of
the aligned frame); the head shape comes from each identity's photo (``--image``), or is FLAME's mean head for
identities without a photo; a FLAME renderer turns them into the 512 px hint the pose ControlNet reads.

The renderer is passed in as ``render(params: FaceParameters) -> uint8 [N, 512, 512, 3]`` (the FLAME half of the pack:
``functools.partial(flame_normal_maps, load_flame(path))``), so this module needs nothing from it but that signature.
Options come from ``add_pose_photo_arguments(parser)``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from ..errors import InvalidInputError, NoFaceError
from ..faces.mediapipe_landmarks import CROP_LANDMARKS
from ..pose.face_parameters import FaceParameters
from ..weights import ModelRoots

Renderer = Callable[[FaceParameters], np.ndarray]


def add_pose_photo_arguments(parser: argparse.ArgumentParser) -> None:
    """``--pose-photo`` and ``--smirk-crop`` in their own option group."""
    group = parser.add_argument_group(
        "pose from a photo (SMIRK + FLAME: <models>/arc2face/smirk/SMIRK_em1.pt, <models>/arc2face/flame/"
        "generic_model.pkl)")
    group.add_argument("--pose-photo", action="append", type=Path, metavar="PHOTO",
                       help="a photo whose head pose, expression and framing pose every image (as the reference "
                            "demo's pose reference); repeat it once per identity to pose each its own way. The head "
                            "shape comes from each identity's --image (FLAME's mean head without one)")
    group.add_argument("--smirk-crop", default="auto", choices=CROP_LANDMARKS,
                       help="landmarks of SMIRK's face crop: auto = MediaPipe's 478 points when the mediapipe "
                            "package and <models>/arc2face/smirk/face_landmarker.task are there (SMIRK's own crop), "
                            "else insightface's 68")


def read_photos(paths: Sequence[Path]) -> list[np.ndarray]:
    """Photos as uint8 BGR arrays (EXIF orientation applied), each error naming its file."""
    from PIL import Image, ImageOps

    photos = []
    for path in paths:
        try:
            with Image.open(path) as image:
                photos.append(np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(image).convert("RGB"))[..., ::-1]))
        except OSError as exc:
            raise InvalidInputError(f"Cannot read the image {path}: {exc}") from exc
    return photos


class PhotoReader:
    """The face analyzer, 1k3d68, SMIRK and the crop landmarker, loaded once for every photo of a run."""

    def __init__(self, roots: ModelRoots, providers: Sequence[Any], crop: str = "auto", face: str = "largest",
                 quiet: bool = False) -> None:
        from ..expression.smirk import load_smirk
        from ..faces.analysis import load_face_analyzer
        from ..faces.landmarks import load_landmark_model
        from ..faces.mediapipe_landmarks import choose_crop_landmarker
        from ..weights import SMIRK, find_weight

        self.analyzer = load_face_analyzer(roots, providers)
        self.landmark_model = load_landmark_model(roots, providers)
        self.smirk = load_smirk(find_weight(SMIRK, roots.arc2face))
        chosen = choose_crop_landmarker(roots.arc2face, crop)
        self.landmarker, self.crop_reason, self.face, self.roots = chosen.landmarker, chosen.reason, face, roots
        if not quiet:
            print(f"SMIRK crop from {self.crop_reason}", file=sys.stderr)

    def read(self, paths: Sequence[Path], role: str) -> FaceParameters:
        """One row of FLAME parameters per photo; a photo without a face is named, with its ``role``."""
        from ..pose.smirk_photo import face_parameters_from_photos

        rows = []
        for path, photo in zip(paths, read_photos(paths)):   # one at a time: an error names the file
            try:
                rows.append(face_parameters_from_photos([photo], self.analyzer, self.landmark_model, self.smirk,
                                                        self.face, "bgr", self.landmarker, role=role).params)
            except NoFaceError as exc:
                raise NoFaceError(f"{path}: {exc}") from None
        return concat(rows)


def concat(rows: Sequence[FaceParameters]) -> FaceParameters:
    crops = [r.crop for r in rows]
    return FaceParameters(**{name: torch.cat([getattr(r, name) for r in rows])
                             for name in ("shape", "expression", "eyelids", "jaw", "pose", "camera")},
                          crop=None if any(c is None for c in crops) else torch.cat(crops))


def repeat_rows(params: FaceParameters, count: int) -> FaceParameters:
    """One row of parameters repeated ``count`` times (one pose for every identity)."""
    if len(params) == count:
        return params
    if len(params) != 1:
        raise InvalidInputError(f"{len(params)} poses for {count} identities: give 1 (for all) or {count}")
    fields = {name: getattr(params, name).expand(count, -1).clone()
              for name in ("shape", "expression", "eyelids", "jaw", "pose", "camera")}
    crop = None if params.crop is None else params.crop.expand(count, -1, -1).clone()
    return FaceParameters(**fields, crop=crop)


def pose_photo_parameters(reader: PhotoReader, pose_photos: Sequence[Path], count: int,
                          identity_photos: Optional[Sequence[Path]] = None, average: bool = False) -> FaceParameters:
    """The parameters the hints are rendered from: one row per identity (or one for all) with the pose photo's pose,
    expression and camera and each identity photo's head shape (their mean with ``average``; zeros = FLAME's mean
    head without photos)."""
    if len(pose_photos) not in (1, count):
        raise InvalidInputError(f"{len(pose_photos)} --pose-photo for {count} identities: give 1 (for all) or {count}")
    poses = reader.read(pose_photos, "Pose reference (--pose-photo)")
    if not identity_photos:
        return replace(poses, shape=torch.zeros_like(poses.shape))
    shapes = reader.read(identity_photos, "Identity photo (--image), for its head shape").shape
    if average:
        shapes = shapes.mean(dim=0, keepdim=True)
    if len(shapes) != count and len(shapes) != 1:
        raise InvalidInputError(f"{len(shapes)} identity photos for {count} identities")
    rows = max(len(poses), len(shapes))
    return replace(repeat_rows(poses, rows), shape=shapes.expand(rows, -1).clone())


def pose_photo_hints(params: FaceParameters, render: Renderer) -> torch.Tensor:
    """The rendered hints as the pose ControlNet's input: float IMAGE [N, 512, 512, 3], prepared as the nodes do."""
    from ..pose.hint import prepare_normal_map

    maps = np.asarray(render(params))
    if maps.dtype != np.uint8 or maps.ndim != 4 or maps.shape[0] != len(params) or maps.shape[-1] != 3:
        raise InvalidInputError(f"The FLAME renderer returned {maps.dtype} {maps.shape}, not uint8 "
                                f"[{len(params)}, H, W, 3]")
    return prepare_normal_map(torch.from_numpy(maps.astype(np.float32) / 255.0))


def hints_from_args(args: argparse.Namespace, roots: ModelRoots, count: int, render: Renderer,
                    providers: Sequence[Any]) -> tuple[torch.Tensor, dict]:
    """The command line's ``--pose-photo`` path: hints [1 or count, 512, 512, 3] and what made them (settings.json).

    Reads ``args.pose_photo``, ``args.smirk_crop``, ``args.face``, ``args.quiet`` and the identity photos
    ``args.image`` / ``args.average`` of the generate command.
    """
    reader = PhotoReader(roots, providers, args.smirk_crop, args.face, args.quiet)
    identity_photos = getattr(args, "image", None) or None
    params = pose_photo_parameters(reader, args.pose_photo, count, identity_photos, getattr(args, "average", False))
    info = {"pose_photos": [str(p) for p in args.pose_photo], "smirk_crop": reader.crop_reason,
            "head_shape": "identity photos" if identity_photos else "FLAME mean head"}
    return pose_photo_hints(params, render), info
