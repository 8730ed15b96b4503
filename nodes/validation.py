"""Every pack node checks its widget values against its own INPUT_TYPES before it runs.

ComfyUI's own prompt validation misses some values: ``min``/``max`` let NaN through (every comparison with NaN is
false) and are not applied to values that arrive through a link, and a choice list declared as a tuple is not
checked at all. A NaN strength or weight then makes all-black images that ComfyUI reports as a success. So
``check_widget_values`` wraps a node class's FUNCTION once, at registration, for every node of the pack (also nodes
added later: ``nodes/__init__.py`` applies it to everything it registers): each FLOAT/INT value must be a finite
number within the declared range and each choice one of the declared values, or the node raises InvalidInputError
naming itself, the input and what is allowed.

Values that arrive from other nodes are checked too: a CONDITIONING, LATENT, IMAGE or MASK, or the pack's embeddings,
expressions and face parameters, holding NaN or infinity (e.g. the stock ConditioningAverage given a NaN strength
through the API) would sample to a black image reported as a success; the node refuses it, naming the input and the
rows. A stock node (KSampler) cannot see such a value, but the pack's nodes before it still refuse theirs.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from typing import Any, Callable

from ..arc2face_core.errors import InvalidInputError
from ..arc2face_core.validation import nonfinite_places

_WRAPPED = "_arc2face_checks_widgets"
_NUMBER_KINDS = ("FLOAT", "INT")
# Sockets whose values carry tensors that flow into the model: checked for NaN/inf wherever a pack node receives them.
TENSOR_KINDS = ("CONDITIONING", "LATENT", "IMAGE", "MASK", "ARCFACE_EMBEDS", "ARC2FACE_EXPRESSION",
                "ARC2FACE_FACE_PARAMS")


def _declared_inputs(cls) -> dict[str, tuple]:
    """{input name: (kind, options)} of the required and optional inputs (hidden ones are ComfyUI's own)."""
    types = cls.INPUT_TYPES()
    declared = {}
    for section in ("required", "optional"):
        for name, spec in (types.get(section) or {}).items():
            kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
            options = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) \
                else {}
            declared[name] = (kind, options)
    return declared


def _choices(kind: Any, options: dict) -> list | None:
    if isinstance(kind, (list, tuple)):
        return list(kind)
    if kind == "COMBO" and "options" in options:
        return list(options["options"])
    return None


def _range_text(options: dict) -> str:
    low, high = options.get("min"), options.get("max")
    if low is not None and high is not None:
        return f"from {low} to {high}"
    if low is not None:
        return f"of at least {low}"
    if high is not None:
        return f"of at most {high}"
    return "in any range"


def check_value(node: str, name: str, kind: Any, options: dict, value: Any) -> None:
    """Raise InvalidInputError unless ``value`` fits the declared input ``name`` of the node called ``node``."""
    choices = _choices(kind, options)
    if choices is not None:
        if value not in choices:
            shown = choices if len(choices) <= 12 else choices[:12] + ["..."]
            raise InvalidInputError(f"{node}: {name} is {value!r}, which is not one of its choices {shown}.")
        return
    if kind in TENSOR_KINDS:
        places = nonfinite_places(value)
        if places:
            shown = "; ".join(places[:6]) + ("; ..." if len(places) > 6 else "")
            raise InvalidInputError(
                f"{node}: {name} ({kind}) holds NaN or infinity ({shown}). An earlier node made it, e.g. a NaN "
                "strength or weight sent through the API to a stock node; fix that value. With it the images would "
                "be black.")
        return
    if kind not in _NUMBER_KINDS:
        return
    what = "a whole number" if kind == "INT" else "a finite number"
    allowed = f"{name} must be {what} {_range_text(options)}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInputError(f"{node}: {allowed}, got {value!r} ({type(value).__name__}).")
    whole = isinstance(value, numbers.Integral)   # Python ints of any size are finite (and too big for float())
    if not whole and not math.isfinite(float(value)):
        raise InvalidInputError(f"{node}: {allowed}, got {value!r}. NaN and infinity are refused: they would turn "
                                "the images black.")
    if kind == "INT" and not whole and not float(value).is_integer():
        raise InvalidInputError(f"{node}: {allowed}, got {value!r}.")
    low, high = options.get("min"), options.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        raise InvalidInputError(f"{node}: {allowed}, got {value!r}.")


def check_inputs(cls, node: str, values: dict[str, Any]) -> None:
    """Check every declared widget value present in ``values`` (inputs by name, as ComfyUI passes them).

    A node with ``INPUT_IS_LIST`` gets every input as a list of values (one per item of the batch lists that
    ComfyUI gathered): each item is checked.
    """
    declared = _declared_inputs(cls)
    as_lists = bool(getattr(cls, "INPUT_IS_LIST", False))
    for name, value in values.items():
        if name in declared:
            for item in (value if as_lists and isinstance(value, list) else [value]):
                check_value(node, name, *declared[name], item)


def check_widget_values(cls, display_name: str) -> type:
    """Wrap ``cls``'s FUNCTION so that it checks its inputs first (see the module docstring); idempotent."""
    attribute = getattr(cls, "FUNCTION", None)
    static = inspect.getattr_static(cls, attribute, None) if isinstance(attribute, str) else None
    if not inspect.isfunction(static) or getattr(static, _WRAPPED, False) or not hasattr(cls, "INPUT_TYPES"):
        return cls   # already wrapped, or not a classic node's instance method (e.g. a V3 node): leave it alone
    function: Callable = static
    signature = inspect.signature(function)

    def check(args: tuple, kwargs: dict) -> None:
        bound = signature.bind_partial(*args, **kwargs)
        values = dict(bound.arguments)
        values.pop(next(iter(signature.parameters)), None)            # self
        for extra in [n for n, p in signature.parameters.items() if p.kind is p.VAR_KEYWORD]:
            values.update(values.pop(extra, {}))
        check_inputs(cls, display_name, values)

    if inspect.iscoroutinefunction(function):
        @functools.wraps(function)
        async def checked(*args, **kwargs):
            check(args, kwargs)
            return await function(*args, **kwargs)
    else:
        @functools.wraps(function)
        def checked(*args, **kwargs):
            check(args, kwargs)
            return function(*args, **kwargs)

    setattr(checked, _WRAPPED, True)
    setattr(cls, attribute, checked)
    return cls
