"""``python -m arc2face_core``: Arc2Face images without ComfyUI, with two subcommands.

``generate`` (also what runs when no subcommand is given, so older command lines keep working): identities from
photos (``--image``, one identity each, or one averaged identity with ``--average``), from seeded random unit vectors
(``--random-identities N``) or from a saved identities file (``--embeddings``: ``identities.safetensors`` or an older
``embeddings.pt``). The output folder gets ``id{i:03d}_{j:02d}.png`` (identity i, image j), ``identities.safetensors``
(the identities used, ``identity.files``' format), ``embeddings.pt`` (the same as a bare tensor, for older scripts) and
``settings.json`` (everything needed to make the same images again). ``--normal-map`` poses the faces with the
Arc2Face pose ControlNet (one map for all identities, or one per identity); ``--pose-angles`` renders such a map from
a typed head pose (``pose_angles``) and ``--pose-photo`` from a reference photo with SMIRK + FLAME (``pose_photo``),
as the reference made its hints. The noise of the whole run is one seeded
draw (see ``arc2face_core.diffusers_backend.pipeline``) sliced per batch.

``dataset``: a synthetic face dataset for face-recognition training, reproducible, resumable and sharded, with the
paper's identity check (``arc2face_core.datasets``). ``pack`` turns a finished dataset folder into insightface's
RecordIO training set and ``report`` writes its report (``dataset_tools``).

Option groups shared by both subcommands are added by the ``add_..._arguments`` functions in ``build_parser``; a new
group (e.g. another module's ``add_lora_arguments``) is attached to both in that same loop. Errors the pack raises on
purpose print one message and exit with code 2.
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
from ..diffusers_backend.devices import DTYPES, resolve_device
from ..errors import Arc2FaceError, InvalidInputError, NoFaceError
from ..faces.providers import PROVIDER_CHOICES
from ..weights import ModelRoots

EMBEDDINGS_FILE, SETTINGS_FILE, IDENTITIES_FILE = "embeddings.pt", "settings.json", "identities.safetensors"
SUBCOMMANDS = ("generate", "dataset", "pack", "report")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the empty ones (None, False) that say nothing."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    from .downloads import add_download_arguments

    p.add_argument("--models", type=Path, default=Path("models"),
                   help="a ComfyUI-style models folder: arc2face/... and insightface/models/antelopev2/...")
    p.add_argument("--vae", type=Path, default=None,
                   help="SD1.5's VAE: a diffusers vae/ folder or one .safetensors file, diffusers' or the original "
                        "SD layout (default: <models>/vae/sd15_vae.safetensors, where --download puts it)")
    p.add_argument("--device", default="auto", help="torch device: auto (cuda if available), cpu, cuda, cuda:1...")
    p.add_argument("--dtype", default="auto", choices=("auto", *DTYPES), help="auto: fp16 on a GPU, else fp32")
    p.add_argument("--channels-last", action="store_true",
                   help="NHWC memory layout for the UNet and VAE (often faster on GPUs; same images within rounding)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet (slow first batch, faster after: for big runs)")
    p.add_argument("--provider", default="auto", choices=PROVIDER_CHOICES, help="ONNX Runtime provider for faces")
    add_download_arguments(p)


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    from ..diffusers_backend.pipeline import DEFAULT_GUIDANCE, DEFAULT_SIZE, DEFAULT_STEPS

    p.add_argument("--images-per-id", type=int, default=4, help="images of each identity")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="denoising steps (DPM-Solver++ 2M)")
    p.add_argument("--cfg", type=float, default=DEFAULT_GUIDANCE, help="classifier-free guidance scale")
    p.add_argument("--width", type=int, default=DEFAULT_SIZE, help="image width, a multiple of 8")
    p.add_argument("--height", type=int, default=DEFAULT_SIZE, help="image height, a multiple of 8")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise")
    p.add_argument("--ids-per-batch", type=int, default=1,
                   help="identities generated together: one device batch of ids-per-batch x images-per-id images")


def add_pose_arguments(p: argparse.ArgumentParser) -> None:
    from .pose_angles import add_pose_angle_arguments
    from .pose_photo import add_pose_photo_arguments

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
    add_pose_angle_arguments(p)
    add_pose_photo_arguments(p)


def add_output_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", action="append", type=Path,
                        help="a photo of a person (repeatable); 'astronaut' is scikit-image's sample photo")
    source.add_argument("--random-identities", type=int, metavar="N", help="N seeded random identities")
    source.add_argument("--embeddings", type=Path,
                        help=f"identities saved before ({IDENTITIES_FILE}, Save Embeddings, or an {EMBEDDINGS_FILE})")
    p.add_argument("--average", action="store_true", help="average all --image photos into one identity")
    p.add_argument("--face", default="largest", help="which face of a photo: largest, or an index left to right")
    p.add_argument("--identity-seed", type=int, default=None, help="seed of --random-identities (default: --seed)")
    p.add_argument("--overwrite", action="store_true", help="replace files of an earlier run in --out")


def build_parser() -> argparse.ArgumentParser:
    from ..datasets.options import add_dataset_arguments
    from .dataset_tools import add_pack_arguments, add_report_arguments
    from .lcm_options import add_lcm_arguments
    from .reference_options import add_reference_arguments

    parser = argparse.ArgumentParser(
        prog="python -m arc2face_core", description="Arc2Face images without ComfyUI, e.g. synthetic face datasets.",
        epilog="Without a subcommand, generate runs: python -m arc2face_core --models M --image photo.jpg --out DIR. "
               "Each subcommand's options: python -m arc2face_core generate --help (or dataset --help).")
    commands = parser.add_subparsers(dest="command", metavar="{generate,dataset,pack,report}")
    generate = commands.add_parser("generate", formatter_class=_HelpFormatter, help="images of given identities "
                                   "(the default)", description="Images of identities from photos, seeds or a file.")
    dataset = commands.add_parser("dataset", formatter_class=_HelpFormatter, help="a synthetic face dataset",
                                  description="A synthetic face dataset: DIR/<identity>/<image>.png, "
                                              "identities.safetensors and manifest.jsonl (seeds and identity scores); "
                                              "reproducible, resumable, sharded (--shard, --ray).")
    for command in (generate, dataset):   # option groups both share; attach new ones here
        add_model_arguments(command)
        add_sampling_arguments(command)
        add_pose_arguments(command)
        add_output_arguments(command)
    add_generate_arguments(generate)
    for command in (generate, dataset):
        add_lcm_arguments(command)   # datasets draw LCM's noise between steps from each image's seed too
    add_reference_arguments(generate)   # a reference photo keeps one photo's look: for given identities, not datasets
    add_dataset_arguments(dataset)
    add_pack_arguments(commands.add_parser(
        "pack", formatter_class=_HelpFormatter, help="a finished dataset as insightface's RecordIO",
        description="A finished dataset folder as insightface's RecordIO training set (train.rec, train.idx, "
                    "property): the 112x112 crops of the kept images, one class per identity; resumable."))
    add_report_arguments(commands.add_parser(
        "report", formatter_class=_HelpFormatter, help="a dataset folder's report",
        description="report.md and its plots (identity similarities, contact sheet, counts, speed, settings, "
                    "licences) for a dataset folder."))
    return parser


def read_rgb(path: Path) -> np.ndarray:
    """A photo as uint8 RGB, turned upright by its EXIF orientation (as ComfyUI's LoadImage does)."""
    from ..images import read_rgb_file
    from .samples import sample_photo

    if (sample := sample_photo(path)) is not None:
        return sample
    return read_rgb_file(path)


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
    """Unit rows [N, 512] from an identities file (or an older embeddings.pt)."""
    from ..identity.files import load_embeddings as load

    return load(path)[0]


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
    from ..diffusers_backend.controlnet import check_control_range
    from ..pose.hint import check_hint_batch, prepare_normal_map
    from .pose_angles import angle_hints

    control = {"control_scale": 1.0 if args.control_scale is None else args.control_scale,
               "control_start": 0.0 if args.control_start is None else args.control_start,
               "control_end": 1.0 if args.control_end is None else args.control_end}
    rendered, rendered_info = angle_hints(args)
    if getattr(args, "pose_photo", None):
        if rendered is not None or args.normal_map:
            raise InvalidInputError("--pose-photo, --pose-angles and --normal-map each pose the faces: pass one")
        rendered, rendered_info = photo_hints(args, count)
    if not args.normal_map and rendered is None:
        given = [name for name in ("control_scale", "control_start", "control_end") if getattr(args, name) is not None]
        if given:
            raise InvalidInputError(f"--{given[0].replace('_', '-')} needs a pose: pass --normal-map, --pose-angles "
                                    "or --pose-photo")
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


def photo_hints(args, count: int) -> tuple[torch.Tensor, dict]:
    """``--pose-photo``: SMIRK reads the photo's FLAME parameters, FLAME (``--flame``, else the models folder's
    arc2face/flame/generic_model.pkl) renders the hints."""
    import functools

    from ..faces.providers import resolve_providers
    from ..pose.flame import load_flame
    from ..pose.flame_hint import flame_normal_maps
    from ..weights import FLAME, find_weight
    from .pose_photo import hints_from_args

    roots = ModelRoots.under(args.models)
    flame_path = args.flame if args.flame is not None else find_weight(FLAME, roots.arc2face)
    render = functools.partial(flame_normal_maps, load_flame(flame_path))
    hints, info = hints_from_args(args, roots, count, render, resolve_providers(args.provider))
    return hints, dict(info, flame=str(flame_path))


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
    return resolve_device(args.device, args.dtype)


def image_names(count: int, per_id: int) -> list[str]:
    return [f"id{i:03d}_{j:02d}.png" for i in range(count) for j in range(per_id)]


def check_out_dir(out: Path, names: list[str], overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {out} is a file, not a folder")
    existing = [n for n in names + [EMBEDDINGS_FILE, SETTINGS_FILE, IDENTITIES_FILE] if (out / n).exists()]
    if existing and not overwrite:
        raise InvalidInputError(f"{out} already holds {existing[:3]} from an earlier run: choose another --out, or "
                                "pass --overwrite to replace them")


def settings(args, pipeline, info: dict, names: list[str], pose_info: dict, reference_info: dict | None = None) -> dict:
    import diffusers

    from ..diffusers_backend.pipeline import SD15_SCHEDULER_CONFIG

    return {
        "arc2face_core": __version__, "identities": info, "images_per_id": args.images_per_id, "steps": args.steps,
        "guidance_scale": args.cfg, "width": args.width, "height": args.height, "seed": args.seed,
        "noise": "torch.randn((N*k, C, H/f, W/f), generator=torch.Generator('cpu').manual_seed(seed)); "
                 "row i*k+j = image j of identity i",
        "scheduler": {"DPMSolverMultistepScheduler.from_config": SD15_SCHEDULER_CONFIG}, "pose": pose_info or None,
        "reference": reference_info or None,
        "device": str(pipeline.device), "dtype": str(pipeline.dtype).replace("torch.", ""),
        "channels_last": args.channels_last, "compile": args.compile,
        "files": pipeline.files, "images": names, "identities_file": IDENTITIES_FILE, "embeddings": EMBEDDINGS_FILE,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "diffusers": diffusers.__version__},
    }


def run(args) -> int:
    from PIL import Image

    from ..datasets.progress import ProgressBar
    from ..diffusers_backend.pipeline import Arc2FacePipeline
    from ..identity.files import save_embeddings
    from .downloads import prepare_run
    from .lcm_options import apply_lcm_arguments
    from .reference_options import reference_from_args

    if args.ids_per_batch < 1 or args.images_per_id < 1:
        raise InvalidInputError("--ids-per-batch and --images-per-id must be at least 1")
    if min(args.width, args.height) < 8 or args.width % 8 or args.height % 8:   # checked again with the VAE loaded
        raise InvalidInputError(f"--width and --height must be positive multiples of 8, got {args.width}x{args.height}")
    roots = ModelRoots.under(args.models)
    device, dtype = device_and_dtype(args)
    vae = prepare_run(args)   # --download: fetch what is missing first; the VAE path (never guessed)
    embeds, info = identities(args, roots)   # before the big models load: a photo without a face fails fast
    count, k = embeds.shape[0], args.images_per_id
    names = image_names(count, k)
    check_out_dir(args.out, names, args.overwrite)
    hint, pose_info = pose(args, count)
    control = {name: value for name, value in pose_info.items() if name.startswith("control_")}
    reference, reference_info = reference_from_args(args, roots, count, read_rgb)
    pipeline = Arc2FacePipeline.load(roots, vae, device=device, dtype=dtype, download=args.download,
                                     controlnet=hint is not None, vae_encoder=reference is not None)
    sampling = apply_lcm_arguments(pipeline, args)   # --scheduler, --lora
    pipeline.optimize(channels_last=args.channels_last, compile=args.compile)
    if not args.quiet:
        print(describe_device(pipeline.device, pipeline.dtype), file=sys.stderr)
    noise = pipeline.noise(count * k, args.width, args.height, args.seed, args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    save_embeddings(args.out / IDENTITIES_FILE, embeds, info)
    torch.save(embeds.cpu().contiguous(), args.out / EMBEDDINGS_FILE)
    (args.out / SETTINGS_FILE).write_text(json.dumps(settings(args, pipeline, info, names, pose_info, reference_info)
                                                     | sampling, indent=2))
    batches = range(0, count, args.ids_per_batch)
    bar = ProgressBar(len(batches) * args.steps, f"{count * k} images", args.quiet, unit="steps")
    for number, start in enumerate(batches):
        stop = min(start + args.ids_per_batch, count)
        progress = None if args.quiet else _progress(bar, number * args.steps)
        hints = hint if hint is None or hint.shape[0] == 1 else hint[start:stop]   # one per identity: its slice
        images = pipeline.generate(embeds[start:stop], k, args.steps, args.cfg, args.width, args.height,
                                   noise=noise[start * k:stop * k], progress=progress, hint=hints, **control,
                                   reference=reference and reference.for_identities(start, stop))
        for name, image in zip(names[start * k:stop * k], images):
            Image.fromarray(image).save(args.out / name)
    if not args.quiet:
        print(f"wrote {len(names)} images to {args.out}", file=sys.stderr)
    return 0


def _progress(bar, before: int):
    """The pipeline's per-step callback of one batch, moving the run's whole bar (steps, rate, time left)."""
    def report(done: int, total: int) -> None:
        bar.set(before + done)
    return report


def describe_device(device: torch.device, dtype: torch.dtype) -> str:
    """What the run computes on, said before the slow part starts (a CPU torch in a GPU machine is easy to miss)."""
    line = f"arc2face: generating on {device} in {str(dtype).replace('torch.', '')}"
    if device.type != "cpu":
        return line
    build = "a CPU-only build of torch" if torch.version.cuda is None else "torch, which finds no usable GPU"
    return (f"{line} ({build} {torch.__version__}). On a CPU each image takes minutes (25 steps at 512x512); for a GPU "
            "put a CUDA build of torch into this environment, or run with the Python of a GPU ComfyUI (README, "
            "'Running on a GPU').")


def run_dataset(args) -> int:
    from ..datasets.command import make_dataset
    from ..datasets.options import dataset_config, run_options
    from .downloads import prepare_run

    args.vae = prepare_run(args)   # --download: fetch what is missing first; the VAE path (never guessed)
    hint, pose_info = pose(args, len(args.normal_map or ()) or 1)   # one map, or one per identity (checked later)
    return make_dataset(dataset_config(args, hint, pose_info), run_options(args))


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line's options; without a subcommand, ``generate`` (so older command lines keep working)."""
    argv = list(argv)
    if not argv or argv[0] not in (*SUBCOMMANDS, "-h", "--help"):
        argv = ["generate", *argv]
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        from .dataset_tools import run_pack, run_report

        runners = {"dataset": run_dataset, "pack": run_pack, "report": run_report}
        return runners.get(args.command, run)(args)
    except Arc2FaceError as exc:   # a user error the pack explains: the message, no traceback
        print(f"arc2face: error: {exc}", file=sys.stderr)
        return 2
