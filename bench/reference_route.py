"""The baseline's side of the generation benchmarks: what Arc2Face's reference code runs, on the same files.

The reference loads its encoder with transformers (``CLIPTextModelWrapper``, a ``CLIPTextModel`` whose forward takes
token embeddings), projects each ArcFace vector by writing it, zero-padded to 768, over the token embedding of "id"
in "photo of a id person" and running the text tower, and gives the result to diffusers' ``StableDiffusionPipeline``
(with ``DPMSolverMultistepScheduler.from_config`` of SD1.5's config) as ``prompt_embeds``; the pipeline encodes the
empty negative prompt with the same encoder. Here the same: transformers' ``CLIPTextModel.from_pretrained`` with a
forward hook on its token embedding that replaces the "id" rows (what the wrapper's ``input_token_embs`` does), and
the empty prompt's token ids for the negative. The token ids come from the caller (the pack's constants, which
tests/test_prompt_tokens.py checks against CLIP's vocabulary): no tokenizer, so no download.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def load_reference_pipeline(data: Path, scheduler_config: dict, dtype, device: str = "cpu", *,
                            unet_dir: Path | None = None, vae_dir: Path | None = None, encoder_dir: Path | None = None):
    """(StableDiffusionPipeline, CLIPTextModel) from the benchmark files (or the folders given): what the reference
    builds. Each folder is diffusers' / transformers' layout (config.json and the weights)."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from bench import data as bench_data

    encoder_dir = encoder_dir or bench_data.encoder_files(data)[0].parent
    encoder = CLIPTextModel.from_pretrained(encoder_dir, torch_dtype=dtype).eval()
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(vae_dir or bench_data.vae_folder(data), torch_dtype=dtype),
        unet=UNet2DConditionModel.from_pretrained(unet_dir or bench_data.unet_folder(data), torch_dtype=dtype),
        scheduler=DPMSolverMultistepScheduler.from_config(scheduler_config), text_encoder=encoder, tokenizer=None,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device), encoder


def reference_conditioning(encoder, identities, tokens: dict) -> tuple:
    """(positive [N, 77, 768], negative [1, 77, 768]) as the reference computes them (see the module docstring).
    ``tokens``: {"pseudo": padded ids of the pseudo-prompt, "empty": of "", "id_token": the id of "id"}."""
    import torch

    device, dtype = encoder.device, encoder.dtype
    ids = torch.tensor([tokens["pseudo"]] * identities.shape[0], device=device)
    padded = torch.nn.functional.pad(identities, (0, encoder.config.hidden_size - identities.shape[1]))
    where = ids == tokens["id_token"]

    def swap_id_rows(module, args, output):
        output = output.clone()
        output[where] = padded.to(device, output.dtype)
        return output

    with torch.inference_mode():
        hook = encoder.get_input_embeddings().register_forward_hook(swap_id_rows)
        try:
            positive = encoder(input_ids=ids).last_hidden_state
        finally:
            hook.remove()
        negative = encoder(input_ids=torch.tensor([tokens["empty"]], device=device)).last_hidden_state
    return positive.to(dtype), negative.to(dtype)


def pack_tokens() -> str:
    """The token ids for ``reference_conditioning``, as JSON (computed in the parent, passed to the baseline)."""
    from arc2face_core.identity import prompt_tokens as tok

    return json.dumps({"pseudo": tok.padded_ids(tok.PSEUDO_PROMPT_IDS).tolist(),
                       "empty": tok.padded_ids(tok.EMPTY_PROMPT_IDS).tolist(), "id_token": tok.ID_TOKEN})


def documented_seed(dataset_seed: int, identity: int, image: int, attempt: int = 0) -> int:
    """A dataset image's seed by the formula the README documents (not the pack's code)."""
    text = f"arc2face-dataset/v1/noise/{dataset_seed}/{identity}/{image}/{attempt}"
    return int.from_bytes(hashlib.sha256(text.encode("ascii")).digest()[:8], "big") >> 11
