"""The shipped workflows: loadable in the web UI (widgets, links, types) and generated from their specs.

Checked against tests/data/object_info.json, the node definitions of a real ComfyUI (kept current by the integration
test, which also runs every workflow in a real server).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from builders.ui_workflows import FILE_COMBOS, check_ui_workflow, layout_problems, ui_to_api, widgets

REPO = Path(__file__).resolve().parents[1]
SNAPSHOT = json.loads((REPO / "tests" / "data" / "object_info.json").read_text())
REQUIRED = {"arc2face_basic", "arc2face_average", "arc2face_blend", "arc2face_ksampler", "arc2face_pose",
            "arc2face_pose_angles", "arc2face_expression", "arc2face_expression_manual", "arc2face_identity_check"}
SHIPPED = sorted(p.stem for p in (REPO / "example_workflows").glob("*.json"))


def load(name: str) -> dict:
    return json.loads((REPO / "example_workflows" / f"{name}.json").read_text())


def by_type(workflow: dict, node_type: str) -> list[dict]:
    return [n for n in workflow["nodes"] if n["type"] == node_type]


def widget_value(node: dict, name: str):
    names = [w.name for w in widgets(SNAPSHOT[node["type"]])]
    return node["widgets_values"][names.index(name)]


def test_the_required_workflows_ship():
    assert set(SHIPPED) >= REQUIRED


@pytest.mark.parametrize("name", SHIPPED)
def test_workflow_is_consistent_with_the_nodes(name):
    assert check_ui_workflow(load(name), SNAPSHOT, FILE_COMBOS) == []


@pytest.mark.parametrize("name", SHIPPED)
def test_api_prompt_has_every_required_input(name):
    prompt = ui_to_api(load(name), SNAPSHOT)
    for node_id, node in prompt.items():
        info = SNAPSHOT[node["class_type"]]
        missing = set(info["input"]["required"]) - set(node["inputs"])
        assert not missing, f"{name} node {node_id} misses {missing}"


def test_what_each_workflow_does():
    basic = load("arc2face_basic")
    sampler = by_type(basic, "Arc2FaceSampler")[0]
    assert widget_value(sampler, "images_per_id") == 4
    assert (widget_value(sampler, "steps"), widget_value(sampler, "cfg")) == (25, 3.0)
    assert widget_value(sampler, "sampler_name") == "dpmpp_2m"
    assert len(by_type(basic, "LoadImage")) == 1

    average = load("arc2face_average")
    assert len(by_type(average, "LoadImage")) == 3 and len(by_type(average, "Arc2FaceEmbeddingAverage")) == 1

    blend = load("arc2face_blend")
    interp = by_type(blend, "Arc2FaceEmbeddingInterpolate")[0]
    assert widget_value(interp, "steps") > 2 and len(by_type(blend, "Arc2FaceArcFaceEmbed")) == 2

    ksampler = load("arc2face_ksampler")
    assert not by_type(ksampler, "Arc2FaceSampler") and len(by_type(ksampler, "KSampler")) == 1
    ks = by_type(ksampler, "KSampler")[0]
    assert (widget_value(ks, "cfg"), widget_value(ks, "steps")) == (3.0, 25)
    links = {(l[1], l[3], l[4]) for l in ksampler["links"]}
    encoder = by_type(ksampler, "Arc2FaceEncoder")[0]["id"]
    assert (encoder, ks["id"], 1) in links and (encoder, ks["id"], 2) in links  # positive and negative

    check = load("arc2face_identity_check")
    similarity, flt = by_type(check, "Arc2FaceIdentitySimilarity")[0], by_type(check, "Arc2FaceFilterByIdentity")[0]
    assert widget_value(similarity, "images_per_id") == widget_value(by_type(check, "Arc2FaceSampler")[0],
                                                                     "images_per_id") == 4
    assert widget_value(flt, "threshold") == 0.4
    links = {(l[1], l[2], l[3], l[4]) for l in check["links"]}
    save = by_type(check, "SaveImage")[0]
    assert (flt["id"], 0, save["id"], 0) in links                        # only the filtered images are saved
    assert (similarity["id"], 0, flt["id"], 1) in links                  # scores -> filter
    assert any(src == similarity["id"] and slot == 1 for src, slot, _, _ in links)   # the report is shown

    for name in SHIPPED:
        vae = by_type(load(name), "VAELoader")[0]
        assert vae["properties"]["models"][0]["directory"] == "vae"


def test_one_expression_drives_the_flame_hint_and_the_adapter():
    workflow = load("arc2face_pose_angles_flame")
    assert check_ui_workflow(workflow, SNAPSHOT, FILE_COMBOS) == []
    expression = by_type(workflow, "Arc2FaceExpression")[0]["id"]
    angles = by_type(workflow, "Arc2FaceNormalMapFromAngles")[0]
    targets = {(l[3], l[4]) for l in workflow["links"] if l[1] == expression}
    slot = lambda node, name: [i["name"] for i in node["inputs"]].index(name)     # noqa: E731
    adapter = by_type(workflow, "Arc2FaceExpressionAdapter")[0]
    assert targets == {(angles["id"], slot(angles, "expression")), (adapter["id"], slot(adapter, "expression"))}
    flame = by_type(workflow, "Arc2FaceFLAMELoader")[0]["id"]
    assert {(l[3], l[4]) for l in workflow["links"] if l[1] == flame} == {(angles["id"], slot(angles, "flame"))}
    assert widget_value(angles, "yaw") == 30.0


def feeds(workflow: dict, source_type: str, target_type: str, input_name: str) -> bool:
    """Whether an output of a ``source_type`` node is linked to input ``input_name`` of a ``target_type`` node."""
    types = {n["id"]: n["type"] for n in workflow["nodes"]}
    for target in by_type(workflow, target_type):
        link = next(i["link"] for i in target["inputs"] if i["name"] == input_name)
        if any(l[0] == link and types[l[1]] == source_type for l in workflow["links"]):
            return True
    return False


def test_what_the_pose_and_expression_workflows_do():
    for name, hint in (("arc2face_pose", "Arc2FaceNormalMapFromPhoto"), ("arc2face_pose_angles",
                                                                         "Arc2FaceNormalMapFromAngles")):
        pose = load(name)
        assert feeds(pose, hint, "Arc2FacePoseControlNet", "normal_map")
        assert feeds(pose, "Arc2FaceControlNetLoader", "Arc2FacePoseControlNet", "control_net")
        for half in ("positive", "negative"):   # the control on both CFG halves, as the reference
            assert feeds(pose, "Arc2FaceEncoder", "Arc2FacePoseControlNet", half)
            assert feeds(pose, "Arc2FacePoseControlNet", "Arc2FaceSampler", half)
        control = by_type(pose, "Arc2FacePoseControlNet")[0]
        assert [widget_value(control, w) for w in ("strength", "start_percent", "end_percent")] == [1.0, 0.0, 1.0]
        assert widget_value(by_type(pose, "Arc2FaceSampler")[0], "images_per_id") == 4
    assert len(by_type(load("arc2face_pose"), "LoadImage")) == 2   # identity photo and pose reference
    assert not feeds(load("arc2face_pose"), "Arc2FaceNormalMapFromAngles", "Arc2FacePoseControlNet", "normal_map")

    for name, source in (("arc2face_expression", "Arc2FaceExpressionFromImage"),
                         ("arc2face_expression_manual", "Arc2FaceExpression")):
        expression = load(name)
        assert feeds(expression, source, "Arc2FaceExpressionAdapter", "expression")
        assert feeds(expression, "Arc2FaceModelLoader", "Arc2FaceExpressionAdapter", "model")
        assert feeds(expression, "Arc2FaceExpressionAdapter", "Arc2FaceSampler", "model")
        assert widget_value(by_type(expression, "Arc2FaceExpressionAdapter")[0], "weight") == 1.0
    manual = by_type(load("arc2face_expression_manual"), "Arc2FaceExpression")[0]
    assert widget_value(manual, "jaw_open") > 0    # "an expression set by hand (jaw open)"


def generator():
    spec = importlib.util.spec_from_file_location("build_workflows", REPO / "scripts" / "build_workflows.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_workflows"] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_committed_workflows_equal_the_generator_output():
    module = generator()
    assert {p.stem for p in (REPO / "example_workflows").glob("*.json")} == set(module.WORKFLOWS)
    for name in module.WORKFLOWS:
        assert module.build(name, SNAPSHOT) == load(name), f"run scripts/build_workflows.py ({name})"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_workflow_is_tidy_and_explains_itself(name):
    """No overlapping nodes, links left to right, and a Note: what it does, the files it needs, what to try first."""
    workflow = load(name)
    assert layout_problems(workflow) == []
    notes = by_type(workflow, "Note")
    assert len(notes) == 1
    text = notes[0]["widgets_values"][0]
    assert "WHAT IT DOES: " in text and "FILES IT NEEDS" in text and "TRY FIRST: " in text
    loaders = {n["type"] for n in workflow["nodes"]} & {"Arc2FaceModelLoader", "VAELoader", "Arc2FaceArcFaceLoader"}
    for loader, file in (("Arc2FaceModelLoader", "models/arc2face/encoder/"), ("VAELoader", "models/vae/"),
                         ("Arc2FaceArcFaceLoader", "scrfd_10g_bnkps.onnx")):
        assert (loader in loaders) == (file in text), (loader, file)
    assert check_ui_workflow(workflow, SNAPSHOT, FILE_COMBOS) == []


def test_the_layout_check_can_fail():
    workflow = load("arc2face_basic")
    overlapping = copy.deepcopy(workflow)
    a, b = overlapping["nodes"][0], overlapping["nodes"][1]
    b["pos"] = [a["pos"][0] + 10, a["pos"][1] + 10]
    assert any("overlap" in p for p in layout_problems(overlapping))
    backwards = copy.deepcopy(workflow)
    link = backwards["links"][0]
    nodes = {n["id"]: n for n in backwards["nodes"]}
    nodes[link[1]]["pos"], nodes[link[3]]["pos"] = nodes[link[3]]["pos"], nodes[link[1]]["pos"]
    assert any("does not run left to right" in p for p in layout_problems(backwards))


def test_a_new_workflow_gets_a_note_and_a_layout_without_positions_that_fit(monkeypatch):
    """Generic: a spec whose positions are all (0, 0) still comes out tidy, and a workflow without a Note text or a
    loader without a files entry stops the generator (so other workflows cannot ship without them)."""
    module = generator()
    nodes, links = module.basic()
    piled = [module.NodeSpec(n.id, n.type, (0, 0), n.values, n.title, n.size, n.properties) for n in nodes]
    monkeypatch.setitem(module.WORKFLOWS, "arc2face_piled", lambda: (piled, links))
    with pytest.raises(SystemExit, match="add a Note"):
        module.build("arc2face_piled", SNAPSHOT)
    monkeypatch.setitem(module.NOTES, "arc2face_piled", module.Note("does", "try"))
    workflow = module.build("arc2face_piled", SNAPSHOT)
    assert layout_problems(workflow) == [] and check_ui_workflow(workflow, SNAPSHOT, FILE_COMBOS) == []
    monkeypatch.delitem(module.FILES_BY_NODE, "VAELoader")
    with pytest.raises(SystemExit, match="VAELoader loads files"):
        module.build("arc2face_piled", SNAPSHOT)


def test_the_checker_finds_broken_workflows():
    """The consistency test can fail: shifted widgets, a wrong link type, an unconnected input are all caught."""
    good = load("arc2face_basic")
    shifted = copy.deepcopy(good)
    sampler = by_type(shifted, "Arc2FaceSampler")[0]
    sampler["widgets_values"] = sampler["widgets_values"][1:]
    assert any("widget values" in p for p in check_ui_workflow(shifted, SNAPSHOT, FILE_COMBOS))

    bad_combo = copy.deepcopy(good)
    by_type(bad_combo, "Arc2FaceSampler")[0]["widgets_values"][4] = "no_such_sampler"
    assert any("not one of" in p for p in check_ui_workflow(bad_combo, SNAPSHOT, FILE_COMBOS))

    bad_link = copy.deepcopy(good)
    bad_link["links"][0][5] = "IMAGE"
    assert any("link" in p for p in check_ui_workflow(bad_link, SNAPSHOT, FILE_COMBOS))

    unconnected = copy.deepcopy(good)
    encoder = by_type(unconnected, "Arc2FaceEncoder")[0]
    link_id = encoder["inputs"][1]["link"]
    encoder["inputs"][1]["link"] = None
    unconnected["links"] = [l for l in unconnected["links"] if l[0] != link_id]
    for node in unconnected["nodes"]:
        for out in node["outputs"]:
            if out.get("links") and link_id in out["links"]:
                out["links"].remove(link_id)
    assert any("required input 'embeds'" in p for p in check_ui_workflow(unconnected, SNAPSHOT, FILE_COMBOS))
