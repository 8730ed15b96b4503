"""Arc2Face engine: usable without ComfyUI (torch, insightface, onnxruntime, safetensors, numpy, pillow).

Import the submodules you need; nothing heavy is imported here.
"""

__version__ = "0.1.0"
