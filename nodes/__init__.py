"""Thin ComfyUI node classes, one module per theme; each node is its sockets, widgets, tooltips and one core call."""

from . import embeddings, expression, faces, flame, identity, pose, sampling

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in (faces, identity, sampling, embeddings, pose, flame, expression):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
