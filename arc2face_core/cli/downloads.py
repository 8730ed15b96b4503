"""Fetch the model files that have an official public source into a ComfyUI-style ``models`` folder (opt-in only).

Sources, each the one its authors publish: the Arc2Face files (Hugging Face ``FoivosPar/Arc2Face``), SD1.5's VAE
(``stable-diffusion-v1-5/stable-diffusion-v1-5``, ``vae/``), insightface's antelopev2 pack from insightface's own
release archive (the URL ``insightface.utils.storage`` downloads from; only the two files the pack reads are kept),
MediaPipe's ``face_landmarker.task`` from MediaPipe's model storage and SD1.5's LCM-LoRA. SMIRK's checkpoint and FLAME
have no stable public URL: they are named with their links. Every file is written to ``<name>.part`` first, checked
against the size the server announced, then renamed, so an interrupted download never looks finished.

Mirrors: ``HF_ENDPOINT`` (huggingface_hub's own variable), ``ARC2FACE_INSIGHTFACE_RELEASES`` and
``ARC2FACE_MEDIAPIPE_MODELS`` replace the default base URLs (the tests point them at local servers).
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsNotFoundError
from ..weights import safe_join

INSIGHTFACE_RELEASES = "https://github.com/deepinsight/insightface/releases/download/model-zoo"   # insightface 2.x
MEDIAPIPE_MODELS = "https://storage.googleapis.com/mediapipe-models"
TIMEOUT_S = 30
NON_COMMERCIAL = ("insightface's models (antelopev2) are for non-commercial research purposes only "
                  "(https://github.com/deepinsight/insightface#license).")


@dataclass(frozen=True)
class ModelFile:
    title: str
    target: str                   # where it goes, relative to --models (ComfyUI's layout)
    licence: str
    repo: str = ""                # Hugging Face repo ...
    filename: str = ""            # ... and file in it
    url: str = ""                 # or a URL: the file, or the archive holding it
    member: str = ""              # the file's name inside that .zip archive
    alternatives: tuple[str, ...] = ()   # other places the pack also accepts it (then it is not missing)

    def source(self) -> str:
        """The URL the file comes from (mirrors applied)."""
        if self.repo:
            endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
            return f"{endpoint}/{self.repo}/resolve/main/{self.filename}"
        for variable, default in (("ARC2FACE_INSIGHTFACE_RELEASES", INSIGHTFACE_RELEASES),
                                  ("ARC2FACE_MEDIAPIPE_MODELS", MEDIAPIPE_MODELS)):
            if self.url.startswith(default):
                return os.environ.get(variable, default).rstrip("/") + self.url[len(default):]
        return self.url

    def present(self, models: Path) -> bool:
        return any(safe_join(models, rel).is_file() for rel in (self.target,) + self.alternatives)


def _arc2face(title: str, filename: str, alternatives: tuple[str, ...] = ()) -> ModelFile:
    return ModelFile(title, f"arc2face/{filename}", "MIT", repo="FoivosPar/Arc2Face", filename=filename,
                     alternatives=tuple(f"arc2face/{a}" for a in alternatives))


def _antelopev2(title: str, name: str) -> ModelFile:
    return ModelFile(title, f"insightface/models/antelopev2/{name}", "non-commercial research only",
                     url=f"{INSIGHTFACE_RELEASES}/antelopev2.zip", member=name)


UNET_FILES = (_arc2face("Arc2Face UNet config", "arc2face/config.json"),
              _arc2face("Arc2Face UNet (3.4 GB)", "arc2face/diffusion_pytorch_model.safetensors"))
ENCODER_FILES = (_arc2face("Arc2Face ID encoder config", "encoder/config.json"),
                 _arc2face("Arc2Face ID encoder (492 MB)", "encoder/pytorch_model.bin", ("encoder/model.safetensors",)))
FACE_FILES = (ModelFile("Arc2Face's ArcFace recogniser (261 MB)", "arc2face/arcface.onnx", "MIT",
                        repo="FoivosPar/Arc2Face", filename="arcface.onnx",
                        alternatives=("insightface/models/antelopev2/arcface.onnx",)),
              _antelopev2("insightface face detector (from antelopev2.zip, 344 MB)", "scrfd_10g_bnkps.onnx"))
SD15_VAE = ModelFile("SD1.5's VAE (335 MB)", "vae/sd15_vae.safetensors", "CreativeML OpenRAIL-M",
                     repo="stable-diffusion-v1-5/stable-diffusion-v1-5",
                     filename="vae/diffusion_pytorch_model.safetensors")
POSE_FILES = (_arc2face("Arc2Face pose ControlNet config", "controlnet/config.json"),
              _arc2face("Arc2Face pose ControlNet (1.45 GB)", "controlnet/diffusion_pytorch_model.safetensors"),
              _antelopev2("insightface 3D landmarks (from antelopev2.zip)", "1k3d68.onnx"))
EXPRESSION_FILES = (_arc2face("Arc2Face Expression Adapter (78 MB)", "exp_adapter/exp_adapter.bin"),)
REFERENCE_FILES = (_arc2face("Arc2Face Reference Adapter (51 MB)", "ref_adapter/pytorch_lora_weights.safetensors"),
                   _antelopev2("insightface 3D landmarks (from antelopev2.zip)", "1k3d68.onnx"))
# Where the SMIRK crop looks for it (weights.FACE_LANDMARKER): an arc2face folder, beside SMIRK's checkpoint or not.
MEDIAPIPE_FILES = (ModelFile("MediaPipe face landmarker (3.6 MB)", "arc2face/mediapipe/face_landmarker.task",
                             "Apache-2.0", url=f"{MEDIAPIPE_MODELS}/face_landmarker/face_landmarker/float16/1/"
                                               "face_landmarker.task",
                             alternatives=("arc2face/smirk/face_landmarker.task",)),)
LCM_FILES = (ModelFile("SD1.5's LCM-LoRA (135 MB)", "loras/lcm-lora-sdv1-5.safetensors", "OpenRAIL++",
                       repo="latent-consistency/lcm-lora-sdv1-5", filename="pytorch_lora_weights.safetensors"),)
GROUPS = {"core": UNET_FILES + ENCODER_FILES + FACE_FILES + (SD15_VAE,), "pose": POSE_FILES,
          "expression": EXPRESSION_FILES, "reference": REFERENCE_FILES, "mediapipe": MEDIAPIPE_FILES,
          "lcm": LCM_FILES}
# No stable public URL: a user fetches these by hand.
MANUAL = (
    ("SMIRK expression encoder", "arc2face/smirk/SMIRK_em1.pt",
     "https://github.com/georgeretsi/smirk (MIT; the checkpoint is linked from its README)"),
    ("FLAME 2020 head model (pose hints from the whole FLAME head)", "arc2face/flame/generic_model.pkl",
     "https://flame.is.tue.mpg.de/ (registration; non-commercial scientific research licence)"),
)


class DownloadError(WeightsNotFoundError):
    """A download failed (offline, server error, wrong size); the message lists every file still missing."""


def missing_files(models: Path, files) -> list[ModelFile]:
    return [f for f in files if not f.present(models)]


def describe(models: Path, files) -> str:
    return "\n".join(f"  - {safe_join(models, f.target)}  <-  {f.source()}  ({f.title}; {f.licence})"
                     for f in files)


def fetch_missing(models: Path, files, *, quiet: bool = False) -> list[Path]:
    """Download every file of ``files`` that is not under ``models`` yet; returns the paths written.

    The first failure (no network, a server error, a size mismatch) stops at once with one error that lists every
    file still missing and where each goes, so a user offline can fetch them by hand.
    """
    models = Path(models)
    todo = missing_files(models, files)
    written: list[Path] = []
    if todo and not quiet:
        print(f"arc2face: downloading {len(todo)} file(s) into {models}:\n{describe(models, todo)}", file=sys.stderr)
        if any(f.member for f in todo):
            print(f"arc2face: note: {NON_COMMERCIAL}", file=sys.stderr)
    archives: dict[str, Path] = {}
    try:
        for index, item in enumerate(todo):
            target = safe_join(models, item.target)
            if item.member:
                if item.url not in archives:
                    archives[item.url] = _download(item.source(), target.parent / ".antelopev2.zip.download",
                                                   item.title, quiet)
                _extract(archives[item.url], item.member, target)
            else:
                _download(item.source(), target, item.title, quiet)
            written.append(target)
    except (OSError, http.client.HTTPException, zipfile.BadZipFile, DownloadError) as exc:   # URLError: an OSError
        left = todo[index:]
        raise DownloadError(
            f"Downloading {left[0].title} from {left[0].source()} failed ({type(exc).__name__}: {exc}).\n"
            f"Still missing, with where each file goes and where it comes from:\n{describe(models, left)}\n"
            "Check the network and run again (finished files are kept), or put the files there by hand."
        ) from exc
    finally:
        for archive in archives.values():
            archive.unlink(missing_ok=True)
    return written


def _download(url: str, target: Path, title: str, quiet: bool) -> Path:
    """GET ``url`` into ``target`` (via ``target.part``) with a progress bar; the size must be what was announced."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": "arc2face-comfyui"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, open(part, "wb") as out:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        bar = None if quiet else _progress_bar(title, expected)
        done = 0
        while chunk := response.read(1 << 20):
            out.write(chunk)
            done += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
    if done == 0 or (expected is not None and done != expected):
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url} sent {done} bytes, expected {expected if expected is not None else 'more than 0'}")
    os.replace(part, target)
    return target


def _extract(archive: Path, member: str, target: Path) -> None:
    """Copy the one file named ``member`` (at any depth: antelopev2.zip nests a folder) out of the archive."""
    with zipfile.ZipFile(archive) as zf:
        entries = [i for i in zf.infolist() if not i.is_dir() and Path(i.filename).name == member]
        if not entries:
            raise DownloadError(f"{archive.name} holds no {member}")
        part = target.with_name(target.name + ".part")
        with zf.open(entries[0]) as source, open(part, "wb") as out:   # zipfile checks the CRC while reading
            shutil.copyfileobj(source, out)
    if part.stat().st_size != entries[0].file_size:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{member} from {archive.name} has the wrong size")
    os.replace(part, target)


def _progress_bar(title: str, total: int | None):
    try:
        from tqdm import tqdm
    except ImportError:   # pragma: no cover - tqdm comes with huggingface_hub
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=title, file=sys.stderr, leave=True)


# ------------------------------------------------------------------------------------------------- command line

def add_download_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--download", action="store_true",
                        help="download the missing files this run needs (Arc2Face, SD1.5's VAE, insightface's "
                             "antelopev2 detector: non-commercial research only) into --models")


def files_for_run(args: argparse.Namespace) -> tuple:
    """The downloadable files a ``generate`` or ``dataset`` run needs: the default VAE only when --vae is not
    given."""
    files = UNET_FILES + ENCODER_FILES
    checks_identity = getattr(args, "command", None) == "dataset" and not getattr(args, "no_similarity", False)
    if getattr(args, "image", None) or checks_identity:   # faces to embed, or the dataset's identity check
        files += FACE_FILES
    if getattr(args, "normal_map", None):
        files += POSE_FILES[:2]
    if getattr(args, "reference", None):   # the reference photo is aligned from 1k3d68's landmarks
        files += FACE_FILES + REFERENCE_FILES
    if getattr(args, "vae", None) is None:
        files += (SD15_VAE,)
    return tuple(dict.fromkeys(files))   # each file once, in order


def prepare_run(args: argparse.Namespace) -> Path:
    """Check the LCM options, then with --download fetch what the run needs; returns the VAE path (--vae, else <models>/vae/sd15_vae.safetensors,
    which without --download must exist: a VAE is never guessed)."""
    from .lcm_options import check_lcm_arguments

    check_lcm_arguments(args)   # a wrong LCM setting fails before anything is downloaded or loaded
    models = Path(args.models)
    if args.download:
        fetch_missing(models, files_for_run(args), quiet=args.quiet)
    if args.vae is not None:
        return Path(args.vae)
    default = safe_join(models, SD15_VAE.target)
    if not default.exists():
        raise WeightsNotFoundError(
            f"No VAE: --vae was not given and the default {default} does not exist. Pass --vae with your SD1.5 VAE "
            "(a .safetensors file in diffusers' or the original Stable Diffusion layout, e.g. "
            "vae-ft-mse-840000-ema-pruned.safetensors, or a diffusers vae/ folder), or add --download to fetch "
            f"SD1.5's VAE there from {SD15_VAE.source()}.")
    return default


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m arc2face_core.cli.downloads",
                                     description="Download the model files with a public source into a ComfyUI "
                                                 "models folder (what is already there is kept).")
    parser.add_argument("--models", type=Path, default=Path("models"), help="the models folder (ComfyUI/models)")
    parser.add_argument("--with", dest="extras", action="append", default=[], choices=sorted(set(GROUPS) - {"core"}),
                        help="also these files (repeatable): pose, expression, reference, mediapipe, lcm")
    parser.add_argument("--all", action="store_true", help="every group")
    parser.add_argument("--list", action="store_true", help="only list the files, where each goes and its licence")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    groups = list(GROUPS) if args.all else ["core", *args.extras]
    files = tuple(dict.fromkeys(f for group in groups for f in GROUPS[group]))   # 1k3d68 is in two groups
    manual = "\n".join(f"  - {title}: {where}  <-  {link}" for title, where, link in MANUAL)
    if args.list:
        print(f"{describe(args.models, files)}\nBy hand (no stable public URL):\n{manual}\nNote: {NON_COMMERCIAL}")
        return 0
    try:
        fetch_missing(args.models, files, quiet=args.quiet)
    except DownloadError as exc:
        print(f"arc2face: error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"arc2face: all {len(files)} files are in {args.models}. By hand (no stable public URL):\n{manual}\n"
              f"Note: {NON_COMMERCIAL}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
