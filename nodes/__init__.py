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

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in (faces, identity, sampling, embeddings, pose, flame, expression, face_parameters, reference, similarity,
                embedding_files):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
