"""ComfyUI workflows in the UI format: build them, check them against node definitions, convert them to API prompts.

Node definitions are ``/object_info`` entries (``input``, ``input_order``, ``output``, ``output_name``). In the UI
format, widget values are positional: every INT/FLOAT/STRING/BOOLEAN/COMBO input in ``input_order`` (required, then
optional), with one extra value after an input declaring ``control_after_generate`` (seed: "fixed", "randomize", ...)
and one after an ``image_upload`` combo (LoadImage: "image"). Every other input is a socket.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
VIRTUAL_NODES = {"Note", "MarkdownNote"}   # frontend-only nodes: never sent to the server
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}


@dataclass(frozen=True)
class Widget:
    name: str
    kind: str            # INT, FLOAT, STRING, BOOLEAN, COMBO, or CONTROL / UPLOAD for the extra values
    options: dict
    choices: tuple = ()


def _input_entries(info: dict) -> list[tuple[str, Any, dict, bool]]:
    """(name, type, options, required) in the order the UI shows them."""
    entries = []
    order = info.get("input_order") or {s: list(info["input"].get(s, {})) for s in ("required", "optional")}
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = info["input"][section][name]
            kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
            entries.append((name, kind, opts or {}, section == "required"))
    return entries


def _combo(kind: Any, opts: dict) -> tuple | None:
    if isinstance(kind, list):
        return tuple(kind)
    if kind == "COMBO":
        return tuple(opts.get("options", ()))
    return None


def widgets(info: dict) -> list[Widget]:
    out = []
    for name, kind, opts, _ in _input_entries(info):
        choices = _combo(kind, opts)
        if choices is not None:
            out.append(Widget(name, "COMBO", opts, choices))
            if opts.get("image_upload"):
                out.append(Widget(f"{name}#upload", "UPLOAD", {}))
        elif kind in WIDGET_TYPES and not opts.get("forceInput"):
            out.append(Widget(name, kind, opts))
            if opts.get("control_after_generate"):
                out.append(Widget(f"{name}#control", "CONTROL", {}))
    return out


def sockets(info: dict) -> list[tuple[str, str, bool]]:
    """(name, type, required) of the inputs that take a link."""
    return [(name, kind, req) for name, kind, opts, req in _input_entries(info)
            if _combo(kind, opts) is None and (kind not in WIDGET_TYPES or opts.get("forceInput"))]


def outputs(info: dict) -> list[tuple[str, str]]:
    return list(zip(info["output_name"], info["output"]))


# ----------------------------------------------------------------------------------------------------- building

@dataclass
class NodeSpec:
    id: int
    type: str
    pos: tuple[int, int]
    values: dict = field(default_factory=dict)     # widget name → value (defaults fill the rest)
    title: str | None = None
    size: tuple[int, int] = (320, 120)
    properties: dict = field(default_factory=dict)   # e.g. {"models": [...]}: the frontend offers the download


def _default(w: Widget) -> Any:
    if w.kind == "CONTROL":
        return "fixed"
    if w.kind == "UPLOAD":
        return "image"
    if "default" in w.options:
        return w.options["default"]
    if w.kind == "COMBO":
        return w.choices[0] if w.choices else ""
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[w.kind]


def build_ui_workflow(nodes: list[NodeSpec], links: list[tuple[int, str, int, str]], object_info: dict) -> dict:
    """A UI-format workflow; ``links`` are (from node, output name, to node, input name). Positions and sizes come
    from ``auto_layout`` (the spec ``pos`` only orders nodes within a column)."""
    ui_nodes = {}
    layout = auto_layout(nodes, links, object_info)
    for order, spec in enumerate(nodes):
        spec = NodeSpec(spec.id, spec.type, layout[spec.id][0], spec.values, spec.title, layout[spec.id][1],
                        spec.properties)
        if spec.type in VIRTUAL_NODES:
            ui_nodes[spec.id] = {"id": spec.id, "type": spec.type, "pos": list(spec.pos), "size": list(spec.size),
                                 "flags": {}, "order": order, "mode": 0, "inputs": [], "outputs": [],
                                 "properties": {}, "widgets_values": [spec.values["text"]]}
            if spec.title:
                ui_nodes[spec.id]["title"] = spec.title
            continue
        info = object_info[spec.type]
        known = {w.name for w in widgets(info)}
        unknown = set(spec.values) - known
        if unknown:
            raise ValueError(f"{spec.type} has no widgets {sorted(unknown)}")
        node = {
            "id": spec.id, "type": spec.type, "pos": list(spec.pos), "size": list(spec.size), "flags": {},
            "order": order, "mode": 0,
            "inputs": [{"name": n, "type": t, "link": None} for n, t, _ in sockets(info)],
            "outputs": [{"name": n, "type": t, "slot_index": i, "links": []} for i, (n, t) in enumerate(outputs(info))],
            "properties": {"Node name for S&R": spec.type},
            "widgets_values": [spec.values.get(w.name, _default(w)) for w in widgets(info)],
        }
        if spec.title:
            node["title"] = spec.title
        node["properties"].update(spec.properties)
        ui_nodes[spec.id] = node
    ui_links = []
    for link_id, (src, out_name, dst, in_name) in enumerate(links, start=1):
        src_node, dst_node = ui_nodes[src], ui_nodes[dst]
        out_slot = next(i for i, o in enumerate(src_node["outputs"]) if o["name"] == out_name)
        in_slot = next(i for i, s in enumerate(dst_node["inputs"]) if s["name"] == in_name)
        link_type = src_node["outputs"][out_slot]["type"]
        src_node["outputs"][out_slot]["links"].append(link_id)
        dst_node["inputs"][in_slot]["link"] = link_id
        ui_links.append([link_id, src, out_slot, dst, in_slot, link_type])
    for node in ui_nodes.values():
        for o in node["outputs"]:
            o["links"] = o["links"] or None
    return {"last_node_id": max(ui_nodes), "last_link_id": len(ui_links), "nodes": list(ui_nodes.values()),
            "links": ui_links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


# ------------------------------------------------------------------------------------------------------- layout
# LiteGraph draws a node's title bar above its ``pos``; slots and widgets fill the body below it.
TITLE_HEIGHT, SLOT_HEIGHT, WIDGET_HEIGHT = 30, 20, 24
GAP_X, GAP_Y = 60, 50
NOTE_WIDTH, NOTE_LINE = 760, 16


def body_size(spec: NodeSpec, info: dict | None) -> tuple[int, int]:
    """The spec's size, grown where its slots and widgets would not fit (so nodes never spill into each other)."""
    if info is None:   # a Note: its text decides
        lines = sum(max(1, -(-len(line) // 100)) for line in spec.values.get("text", "").splitlines())
        return max(spec.size[0], NOTE_WIDTH), max(spec.size[1], 20 + NOTE_LINE * lines)
    rows = max(len(sockets(info)), len(outputs(info)))
    height = 10 + SLOT_HEIGHT * rows + WIDGET_HEIGHT * len(widgets(info))
    return max(spec.size[0], 200), max(spec.size[1], height)


def auto_layout(nodes: list[NodeSpec], links: list[tuple[int, str, int, str]],
                object_info: dict) -> dict[int, tuple[tuple[int, int], tuple[int, int]]]:
    """{node id: ((x, y), (w, h))}: columns by link depth, so every link runs left to right; no overlaps.

    A node's column is one more than its deepest source; a node without inputs (a loader) sits just left of the
    first node it feeds, which keeps its links short. Within a column, nodes keep the vertical order of their spec
    ``pos`` (the author's intent). Unlinked frontend-only nodes (the Note) form a band across the top.
    """
    ids = [spec.id for spec in nodes]
    sources = {i: {src for src, _, dst, _ in links if dst == i} for i in ids}
    targets = {i: {dst for src, _, dst, _ in links if src == i} for i in ids}
    column: dict[int, int] = {}

    def depth(node: int, seen: tuple = ()) -> int:
        if node in seen:
            raise ValueError(f"the links form a cycle through node {node}")
        if node not in column:
            column[node] = 1 + max((depth(s, seen + (node,)) for s in sources[node]), default=-1)
        return column[node]

    for i in ids:
        depth(i)
    for i in ids:   # inputs-free nodes move right, next to their first consumer
        if not sources[i] and targets[i]:
            column[i] = min(column[t] for t in targets[i]) - 1
    specs = {spec.id: spec for spec in nodes}
    sizes = {spec.id: body_size(spec, object_info.get(spec.type) if spec.type not in VIRTUAL_NODES else None)
             for spec in nodes}
    floating = [i for i in ids if not sources[i] and not targets[i]]
    placed: dict[int, tuple[tuple[int, int], tuple[int, int]]] = {}
    x = 0
    top = TITLE_HEIGHT
    for i in floating:   # the band on top, left to right
        placed[i] = ((x, top), sizes[i])
        x += sizes[i][0] + GAP_X
    band = max((sizes[i][1] for i in floating), default=-GAP_Y - TITLE_HEIGHT) + GAP_Y + TITLE_HEIGHT
    x = 0
    linked = [i for i in ids if i not in floating]
    for col in sorted({column[i] for i in linked}):
        members = sorted((i for i in linked if column[i] == col), key=lambda i: (specs[i].pos[1], specs[i].pos[0], i))
        y = top + band
        for i in members:
            placed[i] = ((x, y), sizes[i])
            y += sizes[i][1] + GAP_Y + TITLE_HEIGHT
        x += max(sizes[i][0] for i in members) + GAP_X
    return placed


def layout_problems(workflow: dict) -> list[str]:
    """Overlapping nodes (title bars included) and links that do not run left to right."""
    problems = []
    boxes = {n["id"]: (n["pos"][0], n["pos"][1] - TITLE_HEIGHT, n["size"][0], n["size"][1] + TITLE_HEIGHT)
             for n in workflow["nodes"]}
    ids = sorted(boxes)
    for a_index, a in enumerate(ids):
        ax, ay, aw, ah = boxes[a]
        for b in ids[a_index + 1:]:
            bx, by, bw, bh = boxes[b]
            if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                problems.append(f"nodes {a} and {b} overlap")
    for link_id, src, _, dst, _, _ in workflow["links"]:
        if boxes[src][0] + boxes[src][2] >= boxes[dst][0]:
            problems.append(f"link {link_id} ({src} -> {dst}) does not run left to right")
    return problems


# ------------------------------------------------------------------------------------------------------ checking

def _check_value(w: Widget, value: Any, where: str, file_combos: set) -> list[str]:
    if w.kind == "CONTROL":
        return [] if value in CONTROL_VALUES else [f"{where}: control value {value!r}"]
    if w.kind == "UPLOAD":
        return [] if value == "image" else [f"{where}: upload value {value!r}"]
    if w.kind == "COMBO":
        if w.name in file_combos:
            return [] if isinstance(value, str) and value else [f"{where}: file name {value!r}"]
        return [] if value in w.choices else [f"{where}: {value!r} is not one of {list(w.choices)[:8]}"]
    if w.kind == "BOOLEAN":
        return [] if isinstance(value, bool) else [f"{where}: {value!r} is not a boolean"]
    if w.kind == "STRING":
        return [] if isinstance(value, str) else [f"{where}: {value!r} is not a string"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (w.kind == "INT" and not isinstance(value, int)):
        return [f"{where}: {value!r} is not {w.kind}"]
    lo, hi = w.options.get("min"), w.options.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return [f"{where}: {value} outside [{lo}, {hi}]"]
    return []


def check_ui_workflow(workflow: dict, object_info: dict, file_combos: dict[str, set] | None = None) -> list[str]:
    """Every problem that would stop the web UI from loading or running the workflow as intended."""
    file_combos = file_combos or {}
    problems = []
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for node in workflow["nodes"]:
        where = f"node {node['id']} ({node['type']})"
        if node["type"] in VIRTUAL_NODES:
            continue
        info = object_info.get(node["type"])
        if info is None:
            problems.append(f"{where}: unknown node type")
            continue
        ws, values = widgets(info), node.get("widgets_values", [])
        if len(values) != len(ws):
            problems.append(f"{where}: {len(values)} widget values for {len(ws)} widgets {[w.name for w in ws]}")
            continue
        for w, value in zip(ws, values):
            problems += _check_value(w, value, f"{where}.{w.name}", file_combos.get(node["type"], set()))
        socket_names = [s[0] for s in sockets(info)]
        for slot in node.get("inputs", []):
            if slot["name"] not in socket_names:
                problems.append(f"{where}: input {slot['name']!r} is not a socket of {node['type']}")
        connected = {s["name"] for s in node.get("inputs", []) if s.get("link") is not None}
        for name, _, required in sockets(info):
            if required and name not in connected:
                problems.append(f"{where}: required input {name!r} is not connected")
        if [(o["name"], o["type"]) for o in node.get("outputs", [])] != outputs(info):
            problems.append(f"{where}: outputs differ from the node definition")
    for link in workflow["links"]:
        link_id, src, src_slot, dst, dst_slot, link_type = link
        if src not in nodes or dst not in nodes:
            problems.append(f"link {link_id}: unknown endpoint")
            continue
        out = nodes[src]["outputs"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        if link_id not in (out.get("links") or []) or inp.get("link") != link_id:
            problems.append(f"link {link_id}: not recorded on both endpoints")
        if not (out["type"] == link_type and inp["type"] in (link_type, "*")):   # "*": an input taking any type
            problems.append(f"link {link_id}: {out['type']} → {inp['type']} ({link_type})")
    return problems


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """The API-format prompt ``POST /prompt`` takes, as the web UI would send it."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) != 0 or node["type"] in VIRTUAL_NODES:
            continue
        info = object_info[node["type"]]
        inputs = {}
        for w, value in zip(widgets(info), node.get("widgets_values", [])):
            if w.kind not in ("CONTROL", "UPLOAD"):
                inputs[w.name] = value
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                _, src, src_slot, *_ = links[slot["link"]]
                inputs[slot["name"]] = [str(src), src_slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


# ------------------------------------------------------------------------------------------------------ snapshot

# Combos listing files of one machine (ComfyUI fills them from the input / model folders).
FILE_COMBOS = {"LoadImage": {"image"}, "VAELoader": {"vae_name"}, "LoraLoaderModelOnly": {"lora_name"},
               "LoraLoader": {"lora_name"}, "Arc2FaceLoadEmbeddings": {"embeddings"}}
_KEPT_KEYS = ("input", "input_order", "output", "output_name", "name", "display_name", "category", "description",
              "output_node", "output_tooltips")


def normalise_node_info(name: str, info: dict) -> dict:
    """The parts of an /object_info entry a workflow depends on, with file-list combos emptied."""
    out = json.loads(json.dumps({k: info[k] for k in _KEPT_KEYS if k in info}))
    for section in out.get("input", {}).values():
        for input_name in FILE_COMBOS.get(name, ()):
            if input_name in section and isinstance(section[input_name][0], list):
                section[input_name][0] = []
    return out
