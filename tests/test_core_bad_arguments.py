"""The core is a public API (the command line and scripts call it directly): every public function refuses a bad
argument with the pack's InvalidInputError, never a raw TypeError, IndexError, ZeroDivisionError or OverflowError,
and never returns an empty batch for a zero count (issue 8).

A hand-written table: each function with good arguments (the call must work, so the table cannot pass vacuously),
and for each argument the kind of bad values to substitute one at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest
import torch

from arc2face_core import batching
from arc2face_core.diffusers_backend import controlnet, pipeline
from arc2face_core.errors import InvalidInputError
from arc2face_core.expression import adapter, smirk, vectors
from arc2face_core.faces import head_pose
from arc2face_core.identity import embeddings
from arc2face_core.pose import hint, render

# Bad values by the kind of argument they replace.
BAD = {
    "count": [None, "3", 2.5, True, 0, -1, 10 ** 30, math.nan, torch.tensor(2), [2]],
    "index": [None, "0", 0.5, True, -1, 10 ** 30, math.nan, torch.tensor(0)],
    "unit": [None, "0.5", True, math.nan, math.inf, -0.1, 1.5, 10 ** 400],
    "number": [None, "0.5", True, math.nan, -math.inf, 10 ** 400, torch.tensor(1.0)],
    "batch": [None, "x", 3, torch.tensor(1.0), torch.zeros(0, 4)],
    "values": [None, "x", 3, torch.tensor(1.0), torch.zeros(0, 4), torch.tensor([math.nan])],   # content checked
    "choice": [None, 3, "no_such_choice", ""],
}


@dataclass
class Case:
    function: Callable
    good: dict[str, Any]
    kinds: dict[str, str]                       # argument -> key of BAD
    extra: dict[str, list] = field(default_factory=dict)   # argument -> more bad values for it alone

    @property
    def name(self) -> str:
        return f"{self.function.__module__.removeprefix('arc2face_core.')}.{self.function.__qualname__}"


LAYOUT = batching.IdentityLayout(2, 2)
HINT = torch.full((1, 16, 16, 3), 0.5)
EXPRESSIONS = torch.zeros(2, 55)
EMBEDS = torch.eye(512)[:2]


CASES = [
    Case(batching.IdentityLayout, {"identities": 2, "images_per_id": 3}, {"identities": "count",
                                                                           "images_per_id": "count"}),
    Case(batching.chunk_layout, {"recorded": None, "rows": 4}, {"rows": "count"}, {"recorded": ["x", 3]}),
    Case(batching.per_row, {"values": torch.zeros(2, 3), "layout": LAYOUT, "what": "x", "what_plural": "xs"},
         {"values": "batch"}, {"layout": [None, "x", (2, 2)]}),
    Case(batching.expand_per_identity, {"tensor": torch.zeros(2, 3), "identities": 2, "images_per_id": 3, "what": "x"},
         {"tensor": "batch", "identities": "count", "images_per_id": "count"}),
    Case(batching.identity_count, {"batch_sizes": [2, 2], "what": "positive"}, {},
         {"batch_sizes": [None, 5, "22", [], [0], [-1], [None], ["2"], [2.5], [10 ** 30], [torch.tensor(2)], [True]]}),
    Case(batching.empty_latent, {"batch": 2, "width": 64, "height": 64},
         {"batch": "count", "width": "count", "height": "count"}, {"width": [12, 4]}),
    Case(batching.expand_latent, {"samples": torch.zeros(1, 4, 8, 8), "identities": 2, "images_per_id": 2},
         {"samples": "values", "identities": "count", "images_per_id": "count"}),
    Case(batching.expand_conditioning, {"conditioning": [[torch.zeros(2, 77, 8), {}]], "identities": 2,
                                        "images_per_id": 2, "what": "positive"},
         {"identities": "count", "images_per_id": "count"},
         {"conditioning": [None, "x", [torch.zeros(2, 8)], [[torch.tensor(1.0), {}]], [[torch.zeros(2, 8)]],
                           [[torch.zeros(3, 8), {}]]]}),
    Case(controlnet.control_image, {"hint": HINT, "identities": 2, "images_per_id": 2, "height": 16, "width": 16},
         {"hint": "values", "identities": "count", "images_per_id": "count", "height": "count", "width": "count"}),
    Case(controlnet.control_active, {"step": 0, "steps": 4, "start": 0.0, "end": 1.0},
         {"step": "index", "steps": "count", "start": "unit", "end": "unit"}, {"step": [4]}),
    Case(controlnet.check_control_range, {"scale": 1.0, "start": 0.0, "end": 1.0},
         {"scale": "number", "start": "unit", "end": "unit"}),
    Case(smirk.postprocess, {"raw": torch.zeros(2, 55)}, {"raw": "batch"}, {"raw": [torch.zeros(2, 54)]}),
    Case(embeddings.random_identities, {"count": 2, "seed": 0}, {"count": "count"},
         {"count": [10 ** 7], "seed": [None, "1", 1.5, -1, 2 ** 64, True]}),
    Case(embeddings.interpolation_weights, {"steps": 3}, {"steps": "count"}),
    Case(embeddings.normalize, {"embeds": EMBEDS}, {"embeds": "values"}, {"embeds": [torch.zeros(2, 512)]}),
    Case(embeddings.average, {"embeds": EMBEDS, "method": "mean"}, {"embeds": "values", "method": "choice"}),
    Case(embeddings.blend, {"embeds_a": EMBEDS, "embeds_b": EMBEDS.flip(0), "weight": 0.5, "method": "slerp"},
         {"embeds_a": "values", "embeds_b": "values", "weight": "unit", "method": "choice"}),
    Case(embeddings.cosine_similarity, {"embeds_a": EMBEDS, "embeds_b": EMBEDS},
         {"embeds_a": "values", "embeds_b": "values"}),
    Case(vectors.neutral, {"n": 2}, {"n": "count"}),
    Case(vectors.make_expression, {"jaw_open": 0.1, "eyelids": 0.5, "coefficients": "1 2"},
         {"jaw_open": "number"},
         {"eyelids": [None, "0.5", math.nan, (0.1,), True], "coefficients": [5, "1e39", "abc", [None], [math.inf]]}),
    Case(vectors.validate_expression, {"x": EXPRESSIONS}, {"x": "values"}),
    Case(vectors.blend_expressions, {"a": EXPRESSIONS, "b": EXPRESSIONS, "weight": 0.5},
         {"a": "values", "b": "values", "weight": "unit"}),
    Case(adapter.validate_expressions, {"expressions": EXPRESSIONS, "expected_dim": 55}, {"expressions": "values"}),
    Case(adapter.expression_tokens_for_batch, {"cond_tokens": torch.zeros(2, 4, 8),
                                               "uncond_tokens": torch.zeros(1, 4, 8), "cond_or_uncond": [1, 0],
                                               "batch": 8, "layout": LAYOUT},
         {"batch": "count", "cond_tokens": "batch", "uncond_tokens": "batch"},
         {"cond_or_uncond": [None, [], [2], "01", 5], "layout": ["x", 3]}),
    Case(head_pose.rotation_from_angles, {"pitch": 10.0, "yaw": -20.0, "roll": 5.0},
         {"pitch": "number", "yaw": "number", "roll": "number"}),
    Case(head_pose.check_rotation, {"rotation": np.eye(3)}, {},
         {"rotation": [None, "x", np.eye(2), 2 * np.eye(3), -np.eye(3), [[1, 0], [0]], torch.tensor(1.0)]}),
    Case(render.render_normal_map, {"landmarks": None, "rotation": None, "size": 32},
         {"size": "count"}, {"rotation": ["x", np.eye(2)], "landmarks": ["x", np.zeros((5, 3))]}),
    Case(hint.prepare_normal_map, {"images": HINT, "size": 32}, {"images": "values", "size": "count"}),
    Case(hint.check_hint_batch, {"hints": 2, "identities": 2}, {"hints": "count", "identities": "count"}),
    Case(pipeline.initial_noise, {"count": 2, "channels": 4, "latent_height": 8, "latent_width": 8, "seed": 0},
         {"count": "count", "channels": "count", "latent_height": "count", "latent_width": "count"},
         {"seed": [None, "1", -1, 2 ** 64]}),
]


def _bad_calls():
    for case in CASES:
        for argument in case.good:
            values = BAD.get(case.kinds.get(argument), []) + case.extra.get(argument, [])
            for value in values:
                yield pytest.param(case, argument, value, id=f"{case.name}-{argument}={value!r:.30}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_good_call_works(case):
    result = case.function(**case.good)
    if isinstance(result, torch.Tensor):
        assert result.numel() > 0


@pytest.mark.parametrize("case, argument, value", list(_bad_calls()))
def test_a_bad_argument_is_an_invalid_input_error(case, argument, value):
    with pytest.raises(InvalidInputError) as info:
        case.function(**dict(case.good, **{argument: value}))
    assert len(str(info.value)) > 15, info.value


def test_every_case_has_bad_values():
    assert all(any(BAD.get(c.kinds.get(a)) or c.extra.get(a) for a in c.good) for c in CASES)
    assert len(list(_bad_calls())) > 250
