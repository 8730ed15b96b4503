"""Where each weight file lives, how to find it under one or more model roots, and where to get it.

The Arc2Face files keep the Hugging Face repo layout (``FoivosPar/Arc2Face``) under an ``arc2face`` root, so
``hf_hub_download(repo, filename, local_dir=root)`` and a manual download produce the same tree. The face detector
comes from insightface's antelopev2 pack under an ``insightface`` root. Nothing here touches the network unless the
caller asks for a download.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .errors import UnsafePathError, WeightsNotFoundError, WrongModelError

log = logging.getLogger(__name__)

HF_REPO = "FoivosPar/Arc2Face"
HF_URL = f"https://huggingface.co/{HF_REPO}"
ANTELOPEV2_URL = "https://github.com/deepinsight/insightface/tree/master/python-package#model-zoo"

ARC2FACE_FOLDER = "arc2face"      # ComfyUI model folder name (registered by the nodes)
INSIGHTFACE_FOLDER = "insightface"


@dataclass(frozen=True)
class WeightSpec:
    """One file the pack needs: where it may sit under a root, and where it comes from."""

    title: str                          # what a user calls it, e.g. "Arc2Face ID encoder"
    candidates: tuple[str, ...]         # paths relative to a root, in order of preference
    hf_filename: str | None = None      # file in FoivosPar/Arc2Face, None when it is not there
    companions: tuple[str, ...] = ()    # files fetched along with it (e.g. config.json)
    manual_source: str = HF_URL         # where a user downloads it by hand
    folder: str = ARC2FACE_FOLDER       # which model folder the roots belong to

    def where_to_get(self) -> str:
        if self.hf_filename:
            files = " and ".join((self.hf_filename,) + self.companions)
            return f"download {files} from {HF_URL} (keep the repo's folder layout)"
        return f"get it from {self.manual_source}"


UNET = WeightSpec(
    "Arc2Face UNet",
    ("arc2face/diffusion_pytorch_model.safetensors",),
    hf_filename="arc2face/diffusion_pytorch_model.safetensors",
    companions=("arc2face/config.json",),
)
ENCODER = WeightSpec(
    "Arc2Face ID encoder",
    ("encoder/model.safetensors", "encoder/pytorch_model.bin"),
    hf_filename="encoder/pytorch_model.bin",
    companions=("encoder/config.json",),
)
ARCFACE = WeightSpec(
    "Arc2Face ArcFace recogniser (arcface.onnx)",
    ("arcface.onnx",),
    hf_filename="arcface.onnx",
)
# The reference README puts arcface.onnx into the antelopev2 folder: accept it there too.
ARCFACE_IN_ANTELOPEV2 = WeightSpec(
    "Arc2Face ArcFace recogniser (arcface.onnx)",
    ("models/antelopev2/arcface.onnx",),
    folder=INSIGHTFACE_FOLDER,
)
DETECTOR = WeightSpec(
    "insightface antelopev2 face detector (scrfd_10g_bnkps.onnx)",
    ("models/antelopev2/scrfd_10g_bnkps.onnx",),
    manual_source=f"the antelopev2 pack ({ANTELOPEV2_URL}); unzip it so the file is at "
    "insightface/models/antelopev2/scrfd_10g_bnkps.onnx",
    folder=INSIGHTFACE_FOLDER,
)
LANDMARKS_3D = WeightSpec(
    "insightface antelopev2 3D landmark model (1k3d68.onnx)",
    ("models/antelopev2/1k3d68.onnx",),
    manual_source=f"the antelopev2 pack ({ANTELOPEV2_URL}); unzip it so the file is at "
    "insightface/models/antelopev2/1k3d68.onnx",
    folder=INSIGHTFACE_FOLDER,
)
GLINTR100 = "models/antelopev2/glintr100.onnx"
CONTROLNET = WeightSpec(
    "Arc2Face pose ControlNet",
    ("controlnet/diffusion_pytorch_model.safetensors",),
    hf_filename="controlnet/diffusion_pytorch_model.safetensors",
    companions=("controlnet/config.json",),
)
SMIRK = WeightSpec(
    "SMIRK expression encoder (SMIRK_em1.pt)",
    ("smirk/SMIRK_em1.pt",),
    manual_source="https://github.com/georgeretsi/smirk (MIT; SMIRK_em1.pt is linked from its README); put it at "
    "models/arc2face/smirk/SMIRK_em1.pt",
)
# MediaPipe's face landmarker (Apache-2.0), for SMIRK's crop exactly as SMIRK and the Arc2Face demo make it (478
# points). Optional: without it the crop comes from insightface's 68 points. The Arc2Face demo keeps it beside SMIRK.
FACE_LANDMARKER = WeightSpec(
    "MediaPipe face landmarker (face_landmarker.task)",
    ("smirk/face_landmarker.task", "mediapipe/face_landmarker.task"),
    manual_source="https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/latest/"
    "face_landmarker.task (MediaPipe, Apache-2.0; the file SMIRK's quick_install.sh fetches); put it at "
    "models/arc2face/smirk/face_landmarker.task and install the mediapipe package",
)
# FLAME 2020, licence-gated: the user registers and downloads it; the pack reads it without chumpy and never fetches it.
FLAME = WeightSpec(
    "FLAME 2020 head model (generic_model.pkl)",
    ("flame/generic_model.pkl",),
    manual_source="https://flame.is.tue.mpg.de: register, accept the FLAME licence (non-commercial research), download "
    "FLAME 2020 and put generic_model.pkl at models/arc2face/flame/generic_model.pkl (the pack never downloads it); "
    "optionally add SMIRK's assets/l_eyelid.npy and r_eyelid.npy beside it",
)
EXPRESSION_ADAPTER = WeightSpec(
    "Arc2Face Expression Adapter",
    ("exp_adapter/exp_adapter.bin",),
    hf_filename="exp_adapter/exp_adapter.bin",
)
REFERENCE_ADAPTER = WeightSpec(
    "Arc2Face Reference Adapter (LoRA)",
    ("ref_adapter/pytorch_lora_weights.safetensors",),
    hf_filename="ref_adapter/pytorch_lora_weights.safetensors",
)


def safe_join(root: str | os.PathLike, relative: str | os.PathLike) -> Path:
    """Join ``relative`` under ``root`` and refuse anything that would land outside it.

    Symlinks are not resolved: users often link model folders to other disks, and that is allowed. What is refused
    is a name that climbs out lexically (``..``) or is absolute.
    """
    rel = os.fspath(relative)
    if not rel or os.path.isabs(rel) or (os.name == "nt" and (":" in rel or rel.startswith("\\"))):
        raise UnsafePathError(f"model name {rel!r} must be a relative path inside the model folder {root}")
    base = os.path.normpath(os.path.abspath(os.fspath(root)))
    joined = os.path.normpath(os.path.join(base, rel))
    if os.path.commonpath([base, joined]) != base or joined == base:
        raise UnsafePathError(
            f"model name {rel!r} points outside the model folder {base}; use a path inside that folder"
        )
    return Path(joined)


def _roots_text(roots: Sequence[Path]) -> str:
    return "\n".join(f"  - {r}" for r in roots) or "  (no model folders are configured)"


def candidate_paths(spec: WeightSpec, roots: Iterable[str | os.PathLike]) -> list[Path]:
    """Every place ``spec`` is looked for under ``roots``, in search order (the first existing one is used)."""
    return [safe_join(Path(os.path.abspath(os.fspath(root))), rel) for root in roots for rel in spec.candidates]


def find_weight(
    spec: WeightSpec,
    roots: Iterable[str | os.PathLike],
    *,
    download: bool = False,
) -> Path:
    """Return the first existing candidate of ``spec`` under ``roots``.

    With ``download=True`` and a file that lives in the Hugging Face repo, a missing file is fetched into the first
    root with ``huggingface_hub`` (only then is the network used). Otherwise a missing file raises
    ``WeightsNotFoundError`` naming the file, the folders searched and where to get it.
    """
    root_list = [Path(os.path.abspath(os.fspath(r))) for r in roots]
    for path in candidate_paths(spec, root_list):
        if path.is_file():
            return path
    if download and spec.hf_filename and root_list:
        return download_from_hub(spec, root_list[0])
    looked_for = " or ".join(spec.candidates)
    hint = spec.where_to_get()
    if download and not spec.hf_filename:
        hint += " (this file cannot be downloaded automatically)"
    elif spec.hf_filename:
        hint += ", or turn on the loader's download switch"
    raise WeightsNotFoundError(
        f"{spec.title} not found: looked for {looked_for} in the '{spec.folder}' model folder(s):\n"
        f"{_roots_text(root_list)}\nTo fix: {hint}."
    )


def find_with_config(spec: WeightSpec, roots: Iterable[str | os.PathLike], *,
                     download: bool = False) -> tuple[Path, Path]:
    """(weights, config.json beside them) of a diffusers-folder model. With ``download`` a missing config.json beside
    present weights is fetched too; without, the caller reports a missing config when it reads it."""
    weights = find_weight(spec, roots, download=download)
    config = weights.with_name("config.json")
    if not config.is_file() and download:
        download_from_hub(spec, weights.parent.parent)
    return weights, config


def find_arcface_recogniser(arc2face_roots: Iterable[str | os.PathLike],
                            insightface_roots: Iterable[str | os.PathLike], *, download: bool = False) -> Path:
    """Find Arc2Face's ``arcface.onnx``; refuse when only antelopev2's ``glintr100.onnx`` is there.

    glintr100 is a different ArcFace (trained on Glint360K): its embeddings do not match what Arc2Face was trained
    on, so generated faces would not resemble the person. It is never used as a fallback.
    """
    arc_roots = [Path(os.path.abspath(os.fspath(r))) for r in arc2face_roots]
    ins_roots = [Path(os.path.abspath(os.fspath(r))) for r in insightface_roots]
    for spec, roots in ((ARCFACE, arc_roots), (ARCFACE_IN_ANTELOPEV2, ins_roots)):
        try:
            return find_weight(spec, roots)
        except WeightsNotFoundError:
            pass
    if download and arc_roots:
        return download_from_hub(ARCFACE, arc_roots[0])
    searched = [safe_join(r, "arcface.onnx") for r in arc_roots] + [safe_join(r, ARCFACE_IN_ANTELOPEV2.candidates[0])
                                                                    for r in ins_roots]
    glint = [p for p in (safe_join(r, GLINTR100) for r in ins_roots) if p.is_file()]
    where = "\n".join(f"  - {p}" for p in searched)
    if glint:
        raise WrongModelError(
            f"Found antelopev2's glintr100.onnx ({glint[0]}) but not Arc2Face's arcface.onnx. glintr100 is a "
            "different ArcFace model: Arc2Face was trained on embeddings of the WebFace42M ArcFace in arcface.onnx, "
            "and with glintr100 the generated person does not resemble the photo, so the pack refuses to use it.\n"
            f"Looked for arcface.onnx at:\n{where}\nTo fix: download arcface.onnx from {HF_URL} into the first "
            "folder above (or turn on the loader's download switch)."
        )
    raise WeightsNotFoundError(
        f"{ARCFACE.title} not found. Looked at:\n{where}\nTo fix: {ARCFACE.where_to_get()}, "
        "or turn on the loader's download switch."
    )


def download_from_hub(spec: WeightSpec, root: Path) -> Path:
    """Fetch ``spec`` (and its companions) from the Hugging Face repo into ``root``; the user asked for it."""
    if not spec.hf_filename:
        raise WeightsNotFoundError(f"{spec.title} cannot be downloaded automatically: {spec.where_to_get()}.")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub comes with diffusers/transformers
        raise WeightsNotFoundError(
            f"{spec.title} is missing and huggingface_hub is not installed, so it cannot be downloaded: "
            f"{spec.where_to_get()}."
        ) from exc
    root.mkdir(parents=True, exist_ok=True)
    for filename in spec.companions + (spec.hf_filename,):
        target = safe_join(root, filename)
        if target.is_file():
            continue
        log.info("Arc2Face: downloading %s/%s into %s", HF_REPO, filename, root)
        try:
            hf_hub_download(repo_id=HF_REPO, filename=filename, local_dir=os.fspath(root))
        except Exception as exc:  # network, auth, disk: all end the same way for the user
            raise WeightsNotFoundError(
                f"Downloading {filename} from {HF_URL} into {root} failed ({type(exc).__name__}: {exc}). "
                f"Check the network, or {spec.where_to_get()} by hand."
            ) from exc
    return safe_join(root, spec.hf_filename)


@dataclass
class ModelRoots:
    """The folders searched for each kind of file (several roots allowed, first match wins)."""

    arc2face: list[Path] = field(default_factory=list)
    insightface: list[Path] = field(default_factory=list)

    @classmethod
    def under(cls, models_dir: str | os.PathLike) -> "ModelRoots":
        """The conventional layout under one ``models`` folder (as in ComfyUI)."""
        base = Path(models_dir)
        return cls(arc2face=[base / ARC2FACE_FOLDER], insightface=[base / INSIGHTFACE_FOLDER])
