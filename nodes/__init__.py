"""Thin ComfyUI node classes, one module per theme; each node is its sockets, widgets, tooltips and one core call."""

from . import embeddings, expression, faces, identity, pose, reference, sampling

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in (faces, identity, sampling, embeddings, pose, expression, reference):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
