"""ComfyUI's own sigmas for SD1.5, every scheduler, computed inside a real ComfyUI.

Run with ComfyUI's interpreter from DIR/ComfyUI:  DIR/venv/bin/python <this file> <pack dir> <steps>
Prints one JSON object {scheduler: [sigmas]}: ``comfy.samplers.calculate_sigmas`` on the model_sampling ComfyUI builds
for an SD1.5 (epsilon) model, which is what it detects the Arc2Face UNet as.
"""

from __future__ import annotations

import json

from comfyui_boot import start_comfyui

STEPS = int(start_comfyui()[1])

import comfy.model_base  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.supported_models  # noqa: E402

config = comfy.supported_models.SD15(dict(comfy.supported_models.SD15.unet_config))
sampling = comfy.model_base.model_sampling(config, comfy.model_base.ModelType.EPS)
sigmas = {name: comfy.samplers.calculate_sigmas(sampling, name, STEPS).double().tolist()
          for name in comfy.samplers.KSampler.SCHEDULERS}
print(json.dumps(sigmas))
