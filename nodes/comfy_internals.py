"""Every ComfyUI function, class, attribute and option key the nodes use outside ``comfy_api``, reached through here.

ComfyUI's public ``comfy_api`` (0.3.64) covers the V3 node schema, progress reports and media types, none of what the
pack needs: its model loaders, the memory manager, ModelPatcher's patch methods, ControlNet chains, the sampler and
the option keys its attention code reads. These are internals that may change between ComfyUI versions, so each is
listed in ``NAMES`` / ``METHODS`` / ``KEYS`` with where the pack uses it (docs/comfyui_internals.md has the table) and
checked when first needed: a name missing from the running ComfyUI is a ``ComfyInternalsError`` that names it, its
use and the ComfyUI version the pack was tested with, instead of an AttributeError deep in a run. The check runs when
the nodes run (node modules import ComfyUI only then); the first one also logs every other missing internal once.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging

TESTED_WITH = "ComfyUI 0.3.64 (commit a125cd84)"
log = logging.getLogger("arc2face")

# "module:attribute" -> where the pack uses it (module-level functions, classes, values).
NAMES = {
    "comfy.model_management:get_torch_device": "load device of the pack's models; the face provider's GPU index",
    "comfy.model_management:unet_offload_device": "offload device of the pack's models (adapters, SMIRK, FLAME)",
    "comfy.model_management:text_encoder_device": "load device of the ID encoder",
    "comfy.model_management:text_encoder_offload_device": "offload device of the ID encoder",
    "comfy.model_management:text_encoder_dtype": "the ID encoder's dtype on an accelerator (weight_dtype auto)",
    "comfy.model_management:is_device_cpu": "the ID encoder in float32 on the CPU",
    "comfy.model_management:load_models_gpu": "moving the encoder, SMIRK, FLAME and the UNet (reference pass) in",
    "comfy.model_management:intermediate_device": "where every node's outputs are returned",
    "comfy.model_patcher:ModelPatcher": "wrapping the encoder, adapters, SMIRK, FLAME and the reference tokens",
    "comfy.ops:disable_weight_init": "building the ID encoder without initialising weights it loads anyway",
    "comfy.sd:load_diffusion_model": "Arc2Face Model Loader: the UNet (diffusers keys converted by ComfyUI)",
    "comfy.controlnet:load_controlnet": "Arc2Face Pose ControlNet Loader",
    "comfy.samplers:KSampler": "Arc2Face Sampler's sampler and scheduler choices (SAMPLERS, SCHEDULERS)",
    "comfy.lora:load_lora": "the Reference Adapter's LoRA as ComfyUI patches",
    "comfy.utils:unet_to_diffusers": "mapping the Reference Adapter's diffusers names onto the model's keys",
    "comfy.ldm.modules.attention:optimized_attention": "the Expression Adapter's attention kernel",
    "comfy.cli_args:args": "Save Embeddings honours --disable-metadata",
    "folder_paths:models_dir": "the default arc2face / insightface model folders",
    "folder_paths:folder_names_and_paths": "every arc2face / insightface folder, extra_model_paths.yaml included",
    "folder_paths:add_model_folder_path": "registering the arc2face and insightface model folders",
    "folder_paths:get_input_directory": "Load Embeddings' files",
    "folder_paths:get_output_directory": "Save / Load Embeddings' files",
    "folder_paths:get_save_image_path": "Save Embeddings' numbered file names",
    "nodes:common_ksampler": "Arc2Face Sampler samples exactly as the stock KSampler",
    "comfy_execution.graph_utils:ExecutionBlocker": "Filter by Identity skips the nodes after it when nothing passes",
}
# Methods and attributes of ComfyUI objects the nodes are handed (a MODEL, a CONTROL_NET, a model's sampling object),
# checked on their classes: "module:Class.attribute" -> where the pack uses it.
METHODS = {
    "comfy.model_patcher:ModelPatcher.clone": "every model patch works on a clone (Sampler, both adapters)",
    "comfy.model_patcher:ModelPatcher.set_model_attn2_replace": "the Expression Adapter on all 16 attn2 layers",
    "comfy.model_patcher:ModelPatcher.set_model_attn1_patch": "the Reference Adapter's reference attention",
    "comfy.model_patcher:ModelPatcher.add_patches": "the Reference Adapter's LoRA",
    "comfy.model_patcher:ModelPatcher.set_additional_models": "adapter weights load and offload with the model",
    "comfy.model_patcher:ModelPatcher.get_additional_models_with_key": "stacking adapters already on the model",
    "comfy.model_patcher:ModelPatcher.get_model_object": "the UNet's layers and its model_sampling",
    "comfy.model_patcher:ModelPatcher.model_state_dict": "the model's weight shapes for the Reference LoRA",
    "comfy.controlnet:ControlNet.copy": "the pose ControlNet copied per hint (Pose ControlNet, Sampler)",
    "comfy.controlnet:ControlBase.set_cond_hint": "the pose hint, strength and range",
    "comfy.controlnet:ControlBase.set_previous_controlnet": "stacking on ControlNets already on the conditioning",
    "comfy.model_sampling:ModelSamplingDiscrete.percent_to_sigma": "the Expression Adapter's start/end percent",
    "comfy.model_base:BaseModel.process_latent_in": "the Reference Adapter's write pass scales the latent",
    "comfy.model_base:BaseModel.get_dtype": "the Reference Adapter's write pass runs in the model's dtype",
}
# Option keys ComfyUI reads (patch tables, attention options, conditioning and latent entries): key -> (the ComfyUI
# module whose source must still spell it, where the pack uses it).
KEYS = {
    "transformer_options": ("comfy.samplers", "model_options entry of every patch (and the pack's identity layout)"),
    "patches_replace": ("comfy.ldm.modules.attention", "finding attn2 replacements already on the model"),
    "attn2": ("comfy.ldm.modules.attention", "the cross-attention replacement table"),
    "patches": ("comfy.ldm.modules.attention", "the self-attention patch table (Reference Adapter)"),
    "attn1_patch": ("comfy.ldm.modules.attention", "the Reference Adapter's patch list and its write pass"),
    "n_heads": ("comfy.ldm.modules.attention", "heads of the Expression Adapter's attention"),
    "attn_precision": ("comfy.ldm.modules.attention", "the Expression Adapter calls the kernel as ComfyUI does"),
    "block": ("comfy.ldm.modules.attention", "the Reference Adapter's per-block stored tokens"),
    "block_index": ("comfy.ldm.modules.attention", "the Reference Adapter's per-block stored tokens"),
    "original_shape": ("comfy.ldm.modules.diffusionmodules.openaimodel", "the reference latent's size check"),
    "cond_or_uncond": ("comfy.samplers", "which batch rows are conditional (both adapters)"),
    "sigmas": ("comfy.samplers", "the Expression Adapter's active sigma range"),
    "control": ("comfy.samplers", "ControlNet chains on the conditioning (Pose ControlNet, Sampler)"),
    "control_apply_to_uncond": ("comfy.samplers", "the pose control on both CFG halves, as the stock node sets it"),
    "pooled_output": ("comfy.model_base", "the encoder's conditioning entries"),
    "noise_mask": ("nodes", "the Sampler expands a latent's mask per image"),
    "batch_index": ("nodes", "the Sampler keeps a sliced latent's noise"),
    "context_dim": ("comfy.model_detection", "the model's token width (unet_config), checked by both adapters"),
}


class ComfyInternalsError(RuntimeError):
    """A ComfyUI internal the pack relies on is missing from the running ComfyUI."""


def _resolve(name: str):
    module, _, path = name.partition(":")
    obj = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _key_present(key: str, module: str) -> bool:
    source = inspect.getsource(importlib.import_module(module))
    return f'"{key}"' in source or f"'{key}'" in source


def missing() -> dict[str, str]:
    """Every listed internal the running ComfyUI lacks: {name: where the pack uses it}."""
    gone = {}
    for name, use in {**NAMES, **METHODS}.items():
        try:
            _resolve(name)
        except (ImportError, AttributeError):
            gone[name] = use
    for key, (module, use) in KEYS.items():
        try:
            present = _key_present(key, module)
        except (ImportError, OSError, TypeError):
            present = False
        if not present:
            gone[f"option key {key!r} ({module})"] = use
    return gone


_reported = False


def _refuse(name: str, use: str, cause: Exception) -> ComfyInternalsError:
    return ComfyInternalsError(
        f"Arc2Face needs ComfyUI's {name.replace(':', '.')} ({use}), which this ComfyUI does not have "
        f"({type(cause).__name__}: {cause}). The pack was tested with {TESTED_WITH}: use that ComfyUI version, or "
        "update the pack if a newer one supports yours.")


def _report_once() -> None:
    """On first use: log every missing internal, so one run shows all that this ComfyUI lacks."""
    global _reported
    if not _reported:
        _reported = True
        gone = missing()
        if gone:
            log.warning("Arc2Face: this ComfyUI lacks %d internal(s) the pack was tested with (%s): %s", len(gone),
                        TESTED_WITH, "; ".join(f"{name} ({use})" for name, use in gone.items()))


def _inside_comfyui() -> None:
    """Outside ComfyUI (the pack's own unit tests) there is nothing to check: say so as Python would."""
    if importlib.util.find_spec("comfy") is None:
        raise ModuleNotFoundError("No module named 'comfy': the nodes run inside ComfyUI", name="comfy")


def get(name: str):
    """The ComfyUI object ``"module:attribute"`` (listed in NAMES), or a ComfyInternalsError saying what is missing."""
    if name not in NAMES:
        raise KeyError(f"{name} is not listed in nodes/comfy_internals.py NAMES (list every ComfyUI internal there)")
    _inside_comfyui()
    _report_once()
    try:
        return _resolve(name)
    except (ImportError, AttributeError) as exc:
        raise _refuse(name, NAMES[name], exc) from None


def require(*methods: str) -> None:
    """Check methods of ComfyUI classes a node is about to call on objects it was handed (names from METHODS)."""
    _inside_comfyui()
    _report_once()
    for name in methods:
        if name not in METHODS:
            raise KeyError(f"{name} is not listed in nodes/comfy_internals.py METHODS")
        try:
            _resolve(name)
        except (ImportError, AttributeError) as exc:
            raise _refuse(name, METHODS[name], exc) from None


def key(name: str) -> str:
    """An option key ComfyUI reads (listed in KEYS), for use in patch tables and options."""
    if name not in KEYS:
        raise KeyError(f"{name!r} is not listed in nodes/comfy_internals.py KEYS")
    return name


class _Module:
    """``module.attribute`` read through ``get`` (so the nodes keep ComfyUI's own spelling, e.g. mm.load_models_gpu)."""

    def __init__(self, module: str):
        self._module = module

    def __getattr__(self, attribute: str):
        if attribute.startswith("_"):   # copy, pickle and friends probe dunder names: not ComfyUI's
            raise AttributeError(attribute)
        return get(f"{self._module}:{attribute}")


model_management = _Module("comfy.model_management")
folder_paths = _Module("folder_paths")
