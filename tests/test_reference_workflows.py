"""The Reference Adapter workflows wire the official demo's route: photo → Face Align → (ArcFace Embed, VAE Encode)
→ Reference Adapter → Sampler, at one size, with the demo's strength; the second adds the Expression Adapter."""

from __future__ import annotations

import pytest
from test_workflows import SNAPSHOT, by_type, load, widget_value

from builders.ui_workflows import FILE_COMBOS, check_ui_workflow


def _sources(workflow: dict) -> dict[tuple[int, str], tuple[str, str]]:
    """{(target node id, input name): (source node type, output name)} of every link."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    found = {}
    for _, source, slot, target, target_slot, _ in workflow["links"]:
        found[(target, nodes[target]["inputs"][target_slot]["name"])] = (nodes[source]["type"],
                                                                        nodes[source]["outputs"][slot]["name"])
    return found


@pytest.mark.parametrize("name", ["arc2face_reference", "arc2face_reference_expression"])
def test_reference_workflows_follow_the_demo(name):
    workflow = load(name)
    assert check_ui_workflow(workflow, SNAPSHOT, FILE_COMBOS) == []
    links = _sources(workflow)
    align = by_type(workflow, "Arc2FaceAlignFace")[0]
    adapter = by_type(workflow, "Arc2FaceReferenceAdapter")[0]
    sampler = by_type(workflow, "Arc2FaceSampler")[0]
    embed = by_type(workflow, "Arc2FaceArcFaceEmbed")[0]
    encode = by_type(workflow, "VAEEncode")[0]
    assert links[(embed["id"], "image")] == ("Arc2FaceAlignFace", "aligned")        # identity from the aligned photo
    assert links[(encode["id"], "pixels")] == ("Arc2FaceAlignFace", "aligned")      # and the reference too
    assert links[(adapter["id"], "reference")] == ("VAEEncode", "LATENT")
    assert links[(adapter["id"], "positive")] == ("Arc2FaceEncoder", "positive")
    assert links[(sampler["id"], "model")] == ("Arc2FaceReferenceAdapter", "model")
    assert widget_value(adapter, "strength") == 0.8
    size = widget_value(align, "size")
    assert size == widget_value(sampler, "width") == widget_value(sampler, "height") == 512
    expression = by_type(workflow, "Arc2FaceExpressionAdapter")
    if name.endswith("expression"):
        assert links[(adapter["id"], "model")] == ("Arc2FaceExpressionAdapter", "model")
        assert links[(expression[0]["id"], "model")] == ("Arc2FaceModelLoader", "model")
    else:
        assert not expression and links[(adapter["id"], "model")] == ("Arc2FaceModelLoader", "model")
