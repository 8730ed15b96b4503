"""The benchmark's model files: full-size random weights in the real Hugging Face layouts, fp32 like the real files.

    <data>/arc2face/encoder/{config.json, pytorch_model.bin}                 transformers' CLIPTextModel pickle
    <data>/arc2face/arc2face/{config.json, diffusion_pytorch_model.safetensors}   diffusers' UNet2DConditionModel
    <data>/vae/{config.json, diffusion_pytorch_model.safetensors}            diffusers' AutoencoderKL (SD1.5 shape)

About 4.3 GB in all; keep them outside the repository (``--data``, default ``$ARC2FACE_BENCH_DATA`` or
``<tmp>/arc2face-bench``). Written once; rewritten when a file is missing or not fp32 (the old benchmark wrote fp16).
Building the UNet holds its 3.4 GB state dict in memory twice: run it under the machine's memory lock.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    return Path(os.environ.get("ARC2FACE_BENCH_DATA") or Path(tempfile.gettempdir()) / "arc2face-bench")


def encoder_files(data: Path) -> tuple[Path, Path]:
    folder = data / "arc2face" / "encoder"
    return folder / "pytorch_model.bin", folder / "config.json"


def unet_folder(data: Path) -> Path:
    return data / "arc2face" / "arc2face"


def vae_folder(data: Path) -> Path:
    return data / "vae"


def _safetensors_dtypes(path: Path) -> set[str]:
    """The dtypes named in a safetensors header (8-byte little-endian length, then JSON), without loading tensors."""
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(size))
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


def _is_fp32_safetensors(path: Path) -> bool:
    return path.is_file() and _safetensors_dtypes(path) == {"F32"}


def build(data: Path) -> Path:
    """Write whatever is missing (or not fp32) under ``data``; returns ``data``."""
    sys.path.insert(0, str(REPO / "tests"))
    import torch

    from builders import clip_encoder, sd15_random

    weights, _ = encoder_files(data)
    if not weights.is_file():
        print(f"writing {weights} (fp32, 123M parameters)", file=sys.stderr)
        clip_encoder.write_encoder(data / "arc2face", full_size=True, dtype=torch.float32)
    unet = unet_folder(data) / "diffusion_pytorch_model.safetensors"
    if not _is_fp32_safetensors(unet):
        print(f"writing {unet} (fp32, 860M parameters)", file=sys.stderr)
        sd15_random.write_unet(unet_folder(data), dtype=torch.float32)
    vae = vae_folder(data) / "diffusion_pytorch_model.safetensors"
    if not _is_fp32_safetensors(vae):
        print(f"writing {vae} (fp32, 84M parameters)", file=sys.stderr)
        sd15_random.write_vae(vae, dtype=torch.float32)
        (vae_folder(data) / "config.json").write_text(json.dumps(sd15_random.SD15_VAE_CONFIG, indent=2))
    return data


RANDOM_LORA = "lcm-lora-sdv1-5.safetensors"


def dataset_models(base: Path, lcm_lora: bool = False) -> tuple[Path, Path]:
    """(models folder, VAE file) for the dataset command's benchmarks, written once under ``base``/models: the
    full-size random Arc2Face UNet and encoder, SD1.5's VAE shape, the tests' tiny rigged face models and, with
    ``lcm_lora``, a random LCM-LoRA for the UNet (``loras/RANDOM_LORA``)."""
    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    from builders import clip_encoder, lora, onnx_faces, sd15_random

    models = base / "models"
    vae = models / "vae" / "sd15_vae.safetensors"
    if not vae.is_file():     # written last: its presence means the rest is there
        sd15_random.write_unet(models / "arc2face" / "arc2face")
        clip_encoder.write_encoder(models / "arc2face", full_size=True)
        onnx_faces.build_recogniser(models / "arc2face" / "arcface.onnx", seed=1234)
        onnx_faces.build_rigged_detector(models / "insightface/models/antelopev2/scrfd_10g_bnkps.onnx",
                                         [onnx_faces.astronaut_face()], (512, 512))
        sd15_random.write_vae(vae)
    if lcm_lora and not (models / "loras" / RANDOM_LORA).is_file():
        lora.write_sd15_lcm_lora(models / "loras" / RANDOM_LORA)
    return models, vae


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=default_data_dir())
    print(build(parser.parse_args().data))
