"""Thin ComfyUI node classes, one module per theme; each node is its sockets, widgets, tooltips and one core call."""

from . import (
    embedding_files,
    embeddings,
    expression,
    face_parameters,
    faces,
    flame,
    identity,
    pose,
    reference,
    sampling,
    similarity,
)
from .validation import check_widget_values

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in (faces, identity, sampling, embeddings, pose, flame, expression, face_parameters, reference, similarity,
                embedding_files):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)

# Every node refuses NaN, out-of-range numbers and unknown choices before it runs (ComfyUI lets some through).
for _node_id, _cls in NODE_CLASS_MAPPINGS.items():
    check_widget_values(_cls, NODE_DISPLAY_NAME_MAPPINGS.get(_node_id, _node_id))
