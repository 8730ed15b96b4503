"""The dataset command against the reference's route making the same images (children of bench/generation.py).

Pack: ``arc2face_core.datasets`` as ``python -m arc2face_core dataset`` runs it (prepare, load, make the batches,
write the PNGs and the manifest), on given identities (``--embeddings``), without the identity check. Baseline: the
reference's pipeline (bench/reference_route.py) on the same identities, one identity per call, the latents drawn from
the documented per-image seeds, the images saved as PNGs with PIL. Timed: the generation loop of each (loading
excluded); memory: the process's peak resident set.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench import data as bench_data
from bench.harness import Clock, peak_rss_mib
from bench.reference_route import documented_seed, load_reference_pipeline, reference_conditioning

DATASET_SEED, GUIDANCE = 0, 3.0


def write_identities(path: Path, count: int) -> Path:
    """``count`` seeded unit vectors in an identities file (both sides read the same)."""
    import torch

    from arc2face_core.identity.files import save_embeddings

    rows = torch.nn.functional.normalize(torch.randn(count, 512, generator=torch.Generator().manual_seed(11)), dim=1)
    return save_embeddings(path, rows, {"made_by": "bench/dataset_pairs.py"})


def child_dataset_pack(args) -> dict:
    import numpy as np
    from PIL import Image

    clock = Clock()
    from arc2face_core.datasets.command import prepare
    from arc2face_core.datasets.config import DatasetConfig
    from arc2face_core.datasets.generation import load_maker

    clock.mark("import")
    out = Path(args.out)
    config = DatasetConfig(out=out, models=args.data, vae=bench_data.vae_folder(args.data), identities=None,
                           embeddings=Path(args.embeddings), images_per_id=args.images_per_id, seed=DATASET_SEED,
                           steps=args.small_steps, guidance=GUIDANCE, width=args.small_size, height=args.small_size,
                           score=False, device="cpu", dtype=_dtype_name(args.dtype), quiet=True).check()
    ready = prepare(config)
    maker = load_maker(ready.config, ready.identities, ready.store)
    clock.mark("load")
    stats = maker.run(ready.batches)
    ready.store.assemble_manifest()
    pixels = [np.asarray(Image.open(out / row["file"])) for row in ready.store.read_rows()]
    return _answer(clock, stats.generated, stats.seconds, pixels)


def child_dataset_baseline(args) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    clock = Clock()
    from safetensors.torch import load_file

    clock.mark("import")
    dtype = getattr(torch, args.dtype)
    pipe, encoder = load_reference_pipeline(args.data, json.loads(args.scheduler), dtype)
    clock.mark("load")
    tokens, k = json.loads(args.tokens), args.images_per_id
    identities = load_file(args.embeddings)["embeddings"]   # the identities file's tensor, as written
    out = Path(args.out)
    latent = args.small_size // pipe.vae_scale_factor
    pixels = []
    start = time.perf_counter()
    for identity in range(identities.shape[0]):
        noise = torch.cat([torch.randn((1, 4, latent, latent), dtype=torch.float32, generator=torch.Generator(
            "cpu").manual_seed(documented_seed(DATASET_SEED, identity, image))) for image in range(k)])
        positive, negative = reference_conditioning(encoder, identities[identity:identity + 1], tokens)
        decoded = pipe(prompt_embeds=positive, negative_prompt_embeds=negative, latents=noise.to(dtype),
                       num_images_per_prompt=k, num_inference_steps=args.small_steps, guidance_scale=GUIDANCE,
                       height=args.small_size, width=args.small_size, output_type="np").images
        for image, array in enumerate((np.asarray(decoded) * 255).round().astype(np.uint8)):
            folder = out / f"{identity:05d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(folder / f"{image:03d}.png")
            pixels.append(array)
    seconds = time.perf_counter() - start
    return _answer(clock, len(pixels), seconds, pixels)


def _dtype_name(name: str) -> str:
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[name]


def _answer(clock: Clock, images: int, seconds: float, pixels: list) -> dict:
    import numpy as np

    return dict(clock.marks, dataset_images_per_s=images / seconds, dataset_s=seconds, dataset_images=images,
                dataset_peak_mib=peak_rss_mib(), dataset_image_mean=float(np.mean([p.mean() for p in pixels])))
