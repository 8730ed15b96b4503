"""Thin ComfyUI node classes, one module per theme; each node is its sockets, widgets, tooltips and one core call."""

from . import embeddings, expression, faces, identity, pose, sampling
from .validation import check_widget_values

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in (faces, identity, sampling, embeddings, pose, expression):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)

# Every node refuses NaN, out-of-range numbers and unknown choices before it runs (ComfyUI lets some through).
for _node_id, _cls in NODE_CLASS_MAPPINGS.items():
    check_widget_values(_cls, NODE_DISPLAY_NAME_MAPPINGS.get(_node_id, _node_id))
