"""The generic widget check every pack node gets at registration (nodes/validation.py), without ComfyUI.

The real-server side (NaN through the API, ComfyUI's own "Value not in list"):
tests/integration/test_live_validation.py.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.machinery
import importlib.util
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]



@pytest.fixture(scope="module")
def validation(pack):
    return importlib.import_module(pack.__name__ + ".validation")


@pytest.fixture(scope="module")
def InvalidInputError(validation):   # noqa: N802 - the pack's own class, as imported inside the pack
    return validation.InvalidInputError


FLOAT = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0})
INT = ("INT", {"default": 1, "min": 1, "max": 64})


@pytest.mark.parametrize("spec, value, message", [
    (FLOAT, math.nan, r"Node X: weight must be a finite number from 0.0 to 3.0, got nan\. NaN and infinity"),
    (FLOAT, math.inf, "got inf"),
    (FLOAT, -math.inf, "got -inf"),
    (FLOAT, 3.5, r"from 0.0 to 3.0, got 3.5\.$"),
    (FLOAT, -0.1, "got -0.1"),
    (FLOAT, "1.0", r"got '1.0' \(str\)"),
    (FLOAT, None, r"got None \(NoneType\)"),
    (FLOAT, True, r"got True \(bool\)"),
    (INT, 0, r"weight must be a whole number from 1 to 64, got 0"),
    (INT, 10 ** 30, "got 1000000000000000000000000000000"),
    (INT, 2.5, "got 2.5"),
    (INT, math.nan, "NaN and infinity are refused"),
    ((["slerp", "linear"], {}), "cubic", r"weight is 'cubic', which is not one of its choices \['slerp', 'linear'\]"),
    ((("a", "b"), {}), "c", r"not one of its choices \['a', 'b'\]"),          # a tuple is checked too
    (("COMBO", {"options": ["x", "y"]}), "z", r"not one of its choices \['x', 'y'\]"),
])
def test_bad_values_are_refused_with_node_input_and_range(validation, InvalidInputError, spec, value,
                                                           message):
    with pytest.raises(InvalidInputError, match=message):
        validation.check_value("Node X", "weight", spec[0], spec[1], value)


@pytest.mark.parametrize("spec, value", [
    (FLOAT, 0.0), (FLOAT, 3.0), (FLOAT, 2), (INT, 64), (INT, 3.0), (INT, 1),
    (("FLOAT", {}), 1e300), (("INT", {"min": 0}), 2 ** 64 - 1), ((["a", "b"], {}), "b"),
    (("STRING", {}), "anything"), (("ARCFACE_EMBEDS", {}), object()), (("BOOLEAN", {}), True),
])
def test_good_values_and_other_types_pass(validation, spec, value):
    validation.check_value("Node X", "weight", spec[0], spec[1], value)


def test_every_registered_node_checks_its_widgets(pack):
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert getattr(getattr(cls, cls.FUNCTION), "_arc2face_checks_widgets", False), node_id


def test_a_node_refuses_nan_before_it_runs_and_runs_with_good_values(pack, InvalidInputError):
    """Embedding Blend: NaN weight names the node; a tuple-free choice list is checked; good values run the node."""
    import torch

    blend = pack.NODE_CLASS_MAPPINGS["Arc2FaceEmbeddingBlend"]()
    a, b = torch.eye(512)[:1], torch.eye(512)[1:2]
    with pytest.raises(InvalidInputError, match=r"Embedding Blend: weight must be a finite number from 0.0 to 1.0, "
                                                r"got nan"):
        blend.blend(embeds_a=a, embeds_b=b, weight=math.nan, method="slerp")
    with pytest.raises(InvalidInputError, match=r"Embedding Blend: method is 'cubic', which is not one of"):
        blend.blend(a, b, 0.5, "cubic")                                 # positional arguments are checked too
    (mixed,) = blend.blend(embeds_a=a, embeds_b=b, weight=0.5, method="linear")
    torch.testing.assert_close(mixed[0, :2], torch.tensor([0.5 ** 0.5, 0.5 ** 0.5]))


def test_wrapping_is_idempotent_and_keeps_async_functions_async(validation, InvalidInputError):
    class Node:
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"x": ("FLOAT", {"min": 0.0, "max": 1.0})}, "hidden": {"unique_id": "UNIQUE_ID"}}

        async def run(self, x, **hidden):
            return (x * 2,)

    validation.check_widget_values(Node, "Async Node")
    once = Node.run
    validation.check_widget_values(Node, "Async Node")
    assert Node.run is once
    assert asyncio.run(Node().run(x=0.25, unique_id="7")) == (0.5,)
    with pytest.raises(InvalidInputError, match="Async Node: x must be a finite number from 0.0 to 1.0, got nan"):
        asyncio.run(Node().run(x=math.nan, unique_id="7"))


def test_choice_lists_are_lists(pack):
    """ComfyUI checks "Value not in list" only for a list; every node that needs no ComfyUI import is checked here
    (the Sampler's lists come from ComfyUI: the real-server test checks all of them in ComfyUI's interpreter)."""
    checked = 0
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        try:
            types = cls.INPUT_TYPES()
        except ModuleNotFoundError as err:
            assert err.name.startswith("comfy") or err.name == "folder_paths", err
            continue
        for section in ("required", "optional"):
            for name, spec in types.get(section, {}).items():
                if isinstance(spec[0], (list, tuple)):
                    assert isinstance(spec[0], list), f"{node_id}.{name} declares its choices as a tuple"
                    checked += 1
    assert checked >= 8


def test_a_list_input_node_has_each_item_checked(validation, InvalidInputError):
    """ComfyUI hands a node with INPUT_IS_LIST every input as a list (Filter by Identity's scores and threshold)."""
    class Node:
        INPUT_IS_LIST = True
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):   # noqa: N802
            return {"required": {"scores": ("FLOAT", {"forceInput": True}),
                                 "threshold": ("FLOAT", {"default": 0.4, "min": -1.0, "max": 1.0})}}

        def run(self, scores, threshold):
            return (sum(s >= threshold[0] for s in scores),)

    validation.check_widget_values(Node, "List Node")
    assert Node().run(scores=[0.9, -1.0, 0.5], threshold=[0.4]) == (2,)
    with pytest.raises(InvalidInputError, match=r"List Node: threshold must be a finite number from -1.0 to 1.0, "
                                                r"got nan"):
        Node().run(scores=[0.9], threshold=[math.nan])
    with pytest.raises(InvalidInputError, match=r"List Node: scores must be a finite number in any range, got inf"):
        Node().run(scores=[0.9, math.inf], threshold=[0.4])


def test_values_from_other_nodes_with_nan_or_inf_are_refused_naming_input_and_rows(pack, InvalidInputError):
    """Embeddings and expressions arriving through links: the pack's nodes refuse NaN/inf rows before running."""
    import torch

    blend = pack.NODE_CLASS_MAPPINGS["Arc2FaceEmbeddingBlend"]()
    good = torch.eye(512)[:3]
    bad = good.clone()
    bad[1, 7] = math.nan
    bad[2, 0] = -math.inf
    with pytest.raises(InvalidInputError, match=r"Embedding Blend: embeds_b \(ARCFACE_EMBEDS\) holds NaN or infinity "
                                                r"\(rows \[1, 2\]\)\. An earlier node made it"):
        blend.blend(embeds_a=good, embeds_b=bad, weight=0.5, method="slerp")
    expression_blend = pack.NODE_CLASS_MAPPINGS["Arc2FaceExpressionBlend"]()
    neutral, broken = torch.zeros(2, 55), torch.zeros(2, 55)
    broken[0, 54] = math.inf
    with pytest.raises(InvalidInputError, match=r"Expression Blend: expression_a \(ARC2FACE_EXPRESSION\) holds NaN or "
                                                r"infinity \(row 0\)"):
        expression_blend.blend(expression_a=broken, expression_b=neutral, weight=0.5)


@pytest.mark.parametrize("kind, value, places", [
    ("CONDITIONING", "conditioning", r"entry 1 row 2; entry 1, 'pooled_output' row 0"),
    ("LATENT", "latent", r"'samples' rows \[0, 3\]; 'noise_mask' row 1"),
    ("IMAGE", "image", r"row 4"),
    ("MASK", "mask", r"row 0"),
    ("ARC2FACE_FACE_PARAMS", "face_params", r"jaw row 1"),
])
def test_every_tensor_socket_is_checked_where_the_nan_is(validation, InvalidInputError, kind, value, places):
    import dataclasses

    import torch

    nan = math.nan
    cond = torch.zeros(3, 77, 768)
    cond[2, 76, 767] = nan
    latent = torch.zeros(4, 4, 8, 8)
    latent[0, 0, 0, 0] = nan
    latent[3, 3, 7, 7] = math.inf
    mask = torch.ones(2, 64, 64)
    mask[1, 3, 3] = nan
    image = torch.zeros(5, 16, 16, 3)
    image[4, 0, 0, 2] = nan

    @dataclasses.dataclass
    class Params:
        shape: torch.Tensor
        jaw: torch.Tensor

    jaw = torch.zeros(2, 3)
    jaw[1, 0] = nan
    values = {
        "conditioning": [[torch.zeros(1, 77, 768), {"pooled_output": torch.zeros(1, 768)}],
                         [cond, {"pooled_output": torch.tensor([[nan] * 768]), "strength": 1.0}]],
        "latent": {"samples": latent, "noise_mask": mask, "batch_index": [0, 1, 2, 3]},
        "image": image,
        "mask": torch.tensor([[[math.inf]]]),
        "face_params": Params(shape=torch.zeros(2, 300), jaw=jaw),
    }
    with pytest.raises(InvalidInputError, match=rf"Node X: x \({kind}\) holds NaN or infinity \({places}\)\."):
        validation.check_value("Node X", "x", kind, {}, values[value])


def test_finite_tensor_values_and_integer_tensors_pass(validation):
    import torch

    validation.check_value("Node X", "x", "CONDITIONING", {}, [[torch.zeros(1, 77, 768), {"pooled_output": None}]])
    validation.check_value("Node X", "x", "LATENT", {}, {"samples": torch.zeros(1, 4, 8, 8),
                                                         "batch_index": torch.tensor([2 ** 40])})
    validation.check_value("Node X", "x", "IMAGE", {}, torch.full((1, 4, 4, 3), 1e30))
