"""``python -m arc2face_core``: Arc2Face images without ComfyUI, e.g. synthetic face datasets.

Identities come from photos (``--image``, one identity each, or one averaged identity with ``--average``), from
seeded random unit vectors (``--random-identities N``) or from an ``embeddings.pt`` a previous run saved. The output
folder gets ``id{i:03d}_{j:02d}.png`` (identity i, image j), ``embeddings.pt`` (the identities used, float32 [N, 512])
and ``settings.json`` (everything needed to make the same images again). ``--normal-map`` poses the faces with the
Arc2Face pose ControlNet (one map for all identities, or one per identity); ``--pose-angles`` renders such a map
from a typed head pose (``pose_angles``).

The noise of the whole run is one seeded draw (see ``arc2face_core.pipeline``) sliced per batch, so
``--ids-per-batch`` changes memory use, not the images. Errors the pack raises on purpose print one message and exit
with code 2.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import Arc2FaceError, InvalidInputError, NoFaceError
from ..weights import ModelRoots

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
EMBEDDINGS_FILE, SETTINGS_FILE = "embeddings.pt", "settings.json"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the empty ones (None, False) that say nothing."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from ..faces.providers import PROVIDER_CHOICES
    from .pipeline import DEFAULT_GUIDANCE, DEFAULT_SIZE, DEFAULT_STEPS
    from .pose_angles import add_pose_arguments

    p = argparse.ArgumentParser(prog="python -m arc2face_core", formatter_class=_HelpFormatter,
                                description="Arc2Face images without ComfyUI, e.g. synthetic face datasets.")
    p.add_argument("--models", required=True, type=Path,
                   help="a ComfyUI-style models folder: arc2face/... and insightface/models/antelopev2/...")
    p.add_argument("--vae", type=Path, default=None,
                   help="SD1.5's VAE: a diffusers vae/ folder or one .safetensors file (default: "
                        "<models>/vae/sd15_vae.safetensors)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", action="append", type=Path, help="a photo of a person (repeatable)")
    source.add_argument("--random-identities", type=int, metavar="N", help="N seeded random identities")
    source.add_argument("--embeddings", type=Path, help=f"identities saved by a previous run ({EMBEDDINGS_FILE})")
    p.add_argument("--average", action="store_true", help="average all --image photos into one identity")
    p.add_argument("--face", default="largest", help="which face of a photo: largest, or an index left to right")
    p.add_argument("--identity-seed", type=int, default=None, help="seed of --random-identities (default: --seed)")
    p.add_argument("--images-per-id", type=int, default=4, help="images of each identity")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="denoising steps (DPM-Solver++ 2M)")
    p.add_argument("--cfg", type=float, default=DEFAULT_GUIDANCE, help="classifier-free guidance scale")
    p.add_argument("--width", type=int, default=DEFAULT_SIZE, help="image width, a multiple of 8")
    p.add_argument("--height", type=int, default=DEFAULT_SIZE, help="image height, a multiple of 8")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise")
    pose = p.add_argument_group("pose (the Arc2Face pose ControlNet, <models>/arc2face/controlnet/)")
    pose.add_argument("--normal-map", action="append", type=Path, metavar="FILE",
                      help="a face normal map (RGB = n*0.5+0.5 on mid-grey, as EMOCA renders it) posing every image; "
                           "repeat it once per identity to pose each identity its own way")
    pose.add_argument("--control-scale", type=float, default=None, metavar="S",
                      help="ControlNet strength (default: 1.0)")
    pose.add_argument("--control-start", type=float, default=None, metavar="F",
                      help="fraction of the steps after which the control starts (default: 0.0)")
    pose.add_argument("--control-end", type=float, default=None, metavar="F",
                      help="fraction of the steps after which the control ends (default: 1.0)")
    add_pose_arguments(p)
    p.add_argument("--ids-per-batch", type=int, default=1, help="identities generated together (memory only)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace files of an earlier run in --out")
    p.add_argument("--device", default="auto", help="torch device: auto (cuda if available), cpu, cuda, cuda:1...")
    p.add_argument("--dtype", default="auto", choices=("auto", *DTYPES), help="auto: fp16 on a GPU, else fp32")
    p.add_argument("--provider", default="auto", choices=PROVIDER_CHOICES, help="ONNX Runtime provider for faces")
    p.add_argument("--download", action="store_true", help="download missing Arc2Face files from Hugging Face")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return p


def read_rgb(path: Path) -> np.ndarray:
    """A photo as uint8 RGB, turned upright by its EXIF orientation (as ComfyUI's LoadImage does)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except OSError as exc:  # missing file, not an image (PIL's UnidentifiedImageError), truncated file
        raise InvalidInputError(f"Cannot read the image {path}: {exc}") from exc


def embed_photos(args, roots: ModelRoots) -> tuple[torch.Tensor, dict]:
    from ..faces.analysis import load_face_analyzer
    from ..faces.providers import resolve_providers
    from ..identity.embeddings import average

    analyzer = load_face_analyzer(roots, resolve_providers(args.provider), download=args.download)
    rows = []
    for path in args.image:   # one at a time: photos differ in size, and an error names the file
        bgr = np.ascontiguousarray(read_rgb(path)[..., ::-1])
        try:
            rows.append(analyzer.embed([bgr], face=args.face).embeds)
        except NoFaceError as exc:
            raise NoFaceError(f"{path}: {exc}") from None
    embeds = torch.cat(rows)
    info = {"source": "images", "images": [str(p) for p in args.image], "face": args.face, "average": args.average}
    return (average(embeds) if args.average else embeds), info


def load_embeddings(path: Path) -> torch.Tensor:
    from ..checkpoints import read_checkpoint
    from ..identity.embeddings import validate_embeds

    data = read_checkpoint(path)
    if not isinstance(data, torch.Tensor):
        raise InvalidInputError(f"{path} holds a {type(data).__name__}, not a tensor of ArcFace embeddings [N, 512]")
    return validate_embeds(data, str(path))


def read_normal_map(path: Path) -> torch.Tensor:
    """A normal-map file as a float IMAGE [1, H, W, 3|4] in 0..1 (alpha kept: prepare_normal_map composites it)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            alpha = "A" in image.getbands() or "transparency" in image.info
            pixels = np.asarray(image.convert("RGBA" if alpha else "RGB"))
    except OSError as exc:
        raise InvalidInputError(f"Cannot read the normal map {path}: {exc}") from exc
    return torch.from_numpy(pixels.astype(np.float32) / 255).unsqueeze(0)


def pose(args, count: int) -> tuple[torch.Tensor | None, dict]:
    """The prepared pose hint [1 or N, 512, 512, 3] (None without one) and the control settings (for generate and
    settings.json)."""
    from ..pose.hint import check_hint_batch, prepare_normal_map
    from .controlnet import check_control_range
    from .pose_angles import angle_hints

    control = {"control_scale": 1.0 if args.control_scale is None else args.control_scale,
               "control_start": 0.0 if args.control_start is None else args.control_start,
               "control_end": 1.0 if args.control_end is None else args.control_end}
    rendered, rendered_info = angle_hints(args)
    if not args.normal_map and rendered is None:
        given = [name for name in ("control_scale", "control_start", "control_end") if getattr(args, name) is not None]
        if given:
            raise InvalidInputError(f"--{given[0].replace('_', '-')} needs a pose: pass --normal-map or --pose-angles")
        return None, {}
    if rendered is not None:
        check_hint_batch(rendered.shape[0], count)
        check_control_range(control["control_scale"], control["control_start"], control["control_end"])
        return prepare_normal_map(rendered), dict(control, **rendered_info)
    check_hint_batch(len(args.normal_map), count)
    check_control_range(control["control_scale"], control["control_start"], control["control_end"])
    hints = []
    for path in args.normal_map:   # one at a time: files differ in size, and an error names the file
        try:
            hints.append(prepare_normal_map(read_normal_map(path)))
        except InvalidInputError as exc:
            raise InvalidInputError(f"{path}: {exc}") from None
    return torch.cat(hints), dict(control, normal_maps=[str(p) for p in args.normal_map])


def identities(args, roots: ModelRoots) -> tuple[torch.Tensor, dict]:
    """The ArcFace embeddings [N, 512] to generate, and how they were made (for settings.json)."""
    from ..identity.embeddings import normalize, random_identities

    if args.image:
        return embed_photos(args, roots)
    if args.average:
        raise InvalidInputError("--average needs photos (--image)")
    if args.embeddings:
        return normalize(load_embeddings(args.embeddings)), {"source": "embeddings", "file": str(args.embeddings)}
    seed = args.seed if args.identity_seed is None else args.identity_seed
    embeds = random_identities(args.random_identities, seed)
    return embeds, {"source": "random", "count": args.random_identities, "identity_seed": seed}


def device_and_dtype(args) -> tuple[torch.device, torch.dtype]:
    name = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InvalidInputError(f"--device {args.device!r} is not a torch device ({exc})") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("--device cuda was asked for, but this torch install sees no CUDA GPU: use --device "
                                "cpu")
    if args.dtype == "auto":
        return device, torch.float16 if device.type == "cuda" else torch.float32
    return device, DTYPES[args.dtype]


def image_names(count: int, per_id: int) -> list[str]:
    return [f"id{i:03d}_{j:02d}.png" for i in range(count) for j in range(per_id)]


def check_out_dir(out: Path, names: list[str], overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {out} is a file, not a folder")
    existing = [n for n in names + [EMBEDDINGS_FILE, SETTINGS_FILE] if (out / n).exists()]
    if existing and not overwrite:
        raise InvalidInputError(f"{out} already holds {existing[:3]} from an earlier run: choose another --out, or "
                                "pass --overwrite to replace them")


def settings(args, pipeline, info: dict, names: list[str], pose_info: dict) -> dict:
    import diffusers

    from .pipeline import SD15_SCHEDULER_CONFIG

    return {
        "arc2face_core": __version__, "identities": info, "images_per_id": args.images_per_id, "steps": args.steps,
        "guidance_scale": args.cfg, "width": args.width, "height": args.height, "seed": args.seed,
        "noise": "torch.randn((N*k, C, H/f, W/f), generator=torch.Generator('cpu').manual_seed(seed)); "
                 "row i*k+j = image j of identity i",
        "scheduler": {"DPMSolverMultistepScheduler.from_config": SD15_SCHEDULER_CONFIG}, "pose": pose_info or None,
        "device": str(pipeline.device), "dtype": str(pipeline.dtype).replace("torch.", ""),
        "files": pipeline.files, "images": names, "embeddings": EMBEDDINGS_FILE,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "diffusers": diffusers.__version__},
    }


def run(args) -> int:
    from PIL import Image

    from .pipeline import Arc2FacePipeline

    if args.ids_per_batch < 1 or args.images_per_id < 1:
        raise InvalidInputError("--ids-per-batch and --images-per-id must be at least 1")
    if min(args.width, args.height) < 8 or args.width % 8 or args.height % 8:   # checked again with the VAE loaded
        raise InvalidInputError(f"--width and --height must be positive multiples of 8, got {args.width}x{args.height}")
    roots = ModelRoots.under(args.models)
    device, dtype = device_and_dtype(args)
    embeds, info = identities(args, roots)   # before the big models load: a photo without a face fails fast
    count, k = embeds.shape[0], args.images_per_id
    names = image_names(count, k)
    check_out_dir(args.out, names, args.overwrite)
    hint, pose_info = pose(args, count)
    control = {name: value for name, value in pose_info.items() if name.startswith("control_")}
    vae = args.vae if args.vae is not None else args.models / "vae" / "sd15_vae.safetensors"
    pipeline = Arc2FacePipeline.load(roots, vae, device=device, dtype=dtype, download=args.download,
                                     controlnet=hint is not None)
    noise = pipeline.noise(count * k, args.width, args.height, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(embeds.cpu().contiguous(), args.out / EMBEDDINGS_FILE)
    (args.out / SETTINGS_FILE).write_text(json.dumps(settings(args, pipeline, info, names, pose_info), indent=2))
    for start in range(0, count, args.ids_per_batch):
        stop = min(start + args.ids_per_batch, count)
        which = f"identity {stop}" if stop - start == 1 else f"identities {start + 1}-{stop}"
        progress = None if args.quiet else _progress(f"{which} of {count}")
        hints = hint if hint is None or hint.shape[0] == 1 else hint[start:stop]   # one per identity: its slice
        images = pipeline.generate(embeds[start:stop], k, args.steps, args.cfg, args.width, args.height,
                                   noise=noise[start * k:stop * k], progress=progress, hint=hints, **control)
        for name, image in zip(names[start * k:stop * k], images):
            Image.fromarray(image).save(args.out / name)
    if not args.quiet:
        print(f"wrote {len(names)} images to {args.out}", file=sys.stderr)
    return 0


def _progress(label: str):
    def report(done: int, total: int) -> None:
        print(f"\r{label}: step {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except Arc2FaceError as exc:   # a user error the pack explains: the message, no traceback
        print(f"arc2face: error: {exc}", file=sys.stderr)
        return 2

