"""SMIRK's expression encoder: the plain-torch backbone, the checkpoint loader, the output activations and the crop.

Independent routes: TF 'SAME' padding against ``F.pad`` with the formula + a padding-free convolution; BatchNorm against
the formula by hand; the crop transform against the similarity matrix written out by hand; the whole backbone against
timm itself (run with ComfyUI's interpreter, which can import timm; skipped when COMFYUI_DIR is not set).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from arc2face_core.errors import CorruptWeightsError, InvalidInputError
from arc2face_core.expression.smirk import (
    BatchNormAct2d,
    Conv2dSame,
    ExpressionEncoder,
    MobileNetV3LargeMinimalFeatures,
    conv2d_tf_same,
    load_smirk_encoder,
    postprocess,
)
from arc2face_core.expression.smirk_crop import (
    crop_for_smirk,
    crops_for_smirk,
    smirk_crop_transform,
)
from builders.onnx_faces import astronaut_rgb
from builders.smirk import DECOYS, random_expression_encoder_state_dict, recorded_layout, write_smirk_checkpoint

TESTS = Path(__file__).resolve().parent
CHECKPOINT_PREFIX = "smirk_encoder.expression_encoder."   # SMIRK's own name for the part (smirk_encoder.py)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The MobileNet's many small convolutions run faster on one CPU thread than on several fighting over a busy
    machine (0.08 s against 0.1-1.3 s per 224x224 pair here); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def backbone() -> MobileNetV3LargeMinimalFeatures:
    torch.manual_seed(0)
    return MobileNetV3LargeMinimalFeatures().eval()


@pytest.fixture(scope="module")
def smirk_file(tmp_path_factory) -> Path:
    return write_smirk_checkpoint(tmp_path_factory.mktemp("smirk") / "SMIRK_em1.pt", seed=3)


@pytest.fixture(scope="module")
def smirk_encoder(smirk_file) -> ExpressionEncoder:
    return load_smirk_encoder(smirk_file)


# ---------------------------------------------------------------------------------------------------------- backbone

def test_feature_maps_channels_and_strides(backbone):
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        feats = backbone.features(x)
        last = backbone(x)
    assert [tuple(f.shape) for f in feats] == [(1, 16, 112, 112), (1, 24, 56, 56), (1, 40, 28, 28),
                                               (1, 112, 14, 14), (1, 960, 7, 7)]
    assert last.shape == (1, 960, 7, 7)
    torch.testing.assert_close(last, feats[-1], atol=0, rtol=0)
    assert [f["num_chs"] for f in backbone.feature_info] == [16, 24, 40, 112, 960]
    assert [f["reduction"] for f in backbone.feature_info] == [2, 4, 8, 16, 32]


def test_odd_input_sizes_round_up_like_tensorflow(backbone):
    with torch.no_grad():
        out = backbone(torch.rand(1, 3, 225, 199))
    assert out.shape == (1, 960, math.ceil(225 / 32), math.ceil(199 / 32))   # 8 x 7


# Facts from timm 1.0.31's tf_mobilenetv3_large_minimal_100(features_only=True).state_dict(): 276 entries, and these
# names and shapes (mid channels from make_divisible: 80 * 2.3 = 184, 112 * 6 = 672).
TIMM_SHAPES = {
    "conv_stem.weight": (16, 3, 3, 3),
    "bn1.running_var": (16,),
    "blocks.0.0.conv_dw.weight": (16, 1, 3, 3),
    "blocks.0.0.conv_pw.weight": (16, 16, 1, 1),
    "blocks.1.0.conv_pw.weight": (64, 16, 1, 1),
    "blocks.1.0.conv_pwl.weight": (24, 64, 1, 1),
    "blocks.2.2.conv_dw.weight": (120, 1, 3, 3),
    "blocks.3.2.conv_pw.weight": (184, 80, 1, 1),
    "blocks.4.1.conv_dw.weight": (672, 1, 3, 3),
    "blocks.5.0.conv_pwl.weight": (160, 672, 1, 1),
    "blocks.5.2.bn3.num_batches_tracked": (),
    "blocks.6.0.conv.weight": (960, 160, 1, 1),
    "blocks.6.0.bn1.bias": (960,),
}


def test_parameter_names_are_timms(backbone):
    sd = backbone.state_dict()
    assert len(sd) == 276
    timm_names = {k[len("encoder."):]: v for k, v in recorded_layout().items() if k.startswith("encoder.")}
    assert {k: (tuple(v.shape), v.dtype) for k, v in sd.items()} == timm_names   # recorded from timm, checked in CI
    for name, shape in TIMM_SHAPES.items():
        assert tuple(sd[name].shape) == shape, name
    assert not any(name.endswith(".bias") and "bn" not in name for name in sd)   # convs have no bias
    kinds = {type(m).__name__ for m in backbone.modules()}
    assert kinds <= {"MobileNetV3LargeMinimalFeatures", "Sequential", "DepthwiseSeparable", "InvertedResidual",
                     "ConvBnAct", "Conv2d", "Conv2dSame", "BatchNorm2d", "BatchNormAct2d", "ReLU"}


def tf_same_reference(x: torch.Tensor, weight: torch.Tensor, stride: int, groups: int) -> torch.Tensor:
    """TF 'SAME' by the book: output ceil(n / s); the missing rows/cols split with the extra one at the bottom/right."""
    k = weight.shape[-1]
    pads = []
    for n in (x.shape[-1], x.shape[-2]):   # F.pad order: last dim first
        out = -(-n // stride)
        total = max((out - 1) * stride + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.conv2d(F.pad(x, pads), weight, None, stride, 0, 1, groups)


@pytest.mark.parametrize("height, width", [(224, 224), (225, 225), (7, 8), (112, 57), (1, 2)])
@pytest.mark.parametrize("stride, kernel, depthwise", [(2, 3, True), (2, 3, False), (1, 3, True), (1, 1, False)])
def test_tf_same_padding(height, width, stride, kernel, depthwise):
    g = torch.Generator().manual_seed(height * 1000 + width)
    chs = 6
    conv = conv2d_tf_same(chs, chs, kernel, stride, groups=chs if depthwise else 1)
    assert conv.bias is None
    assert isinstance(conv, Conv2dSame) == (stride == 2)   # static symmetric padding only for stride 1
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
        x = torch.randn(2, chs, height, width, generator=g)
        ours = conv(x)
        ref = tf_same_reference(x, conv.weight, stride, conv.groups)
    assert ours.shape == (2, chs, -(-height // stride), -(-width // stride))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_even_size_pads_only_bottom_right():
    # 224 with k3 s2 needs one row and column of padding, all of it after the image (TF), none before (PyTorch would
    # pad both sides): a kernel reading only its top-left tap returns the input's even rows/cols unshifted.
    conv = conv2d_tf_same(1, 1, 3, 2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = 1.0
        x = torch.arange(224 * 224, dtype=torch.float32).reshape(1, 1, 224, 224)
        torch.testing.assert_close(conv(x), x[:, :, ::2, ::2], atol=0, rtol=0)


def test_batchnorm_uses_tf_epsilon_and_relu():
    bn = BatchNormAct2d(3, relu=True).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        bn.running_mean.copy_(torch.tensor([0.5, -1.0, 0.0]))
        bn.running_var.copy_(torch.tensor([1e-3, 4.0, 0.25]))
        x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
        out = bn(x)
    mean = torch.tensor([0.5, -1.0, 0.0]).view(1, 3, 1, 1)
    var = torch.tensor([1e-3, 4.0, 0.25]).view(1, 3, 1, 1)
    expected = (x - mean) / torch.sqrt(var + 1e-3) * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1) \
        + torch.tensor([0.1, -0.2, 0.3]).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected.clamp_min(0), atol=1e-5, rtol=1e-5)
    assert bn.eps == 1e-3


def test_every_batchnorm_has_eps_1e3(backbone):
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 1 + 2 + 3 * 14 + 1   # stem, the ds block, 2+3+4+2+3 inverted residuals, the final conv
    assert {m.eps for m in norms} == {1e-3}


# --------------------------------------------------------------------------------------------------------- checkpoint

def test_checkpoint_loads_strictly_and_ignores_decoys(smirk_file, smirk_encoder):
    raw = torch.load(smirk_file, weights_only=True)
    assert set(DECOYS) <= set(raw)
    expected = random_expression_encoder_state_dict(seed=3)
    loaded = smirk_encoder.state_dict()
    assert set(loaded) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(loaded[name], tensor, atol=0, rtol=0)
        assert torch.equal(raw[CHECKPOINT_PREFIX + name], tensor)
    assert not smirk_encoder.training
    assert all(not p.requires_grad for p in smirk_encoder.parameters())
    assert all(p.device.type == "cpu" for p in smirk_encoder.parameters())


@pytest.fixture(scope="module")
def face_and_noise() -> torch.Tensor:
    face = crop_for_smirk(astronaut_rgb(), face_landmarks())
    return torch.stack([face, torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(1))])


def test_forward_and_encode(smirk_encoder, face_and_noise):
    """The raw forward's values are checked against timm's model with SMIRK's head on this same kind of file in
    test_backbone_equals_timm (timm imports only in the ComfyUI venv); here: its form, and encode = postprocess."""
    with torch.no_grad():
        raw = smirk_encoder(face_and_noise)
    assert raw.shape == (2, 55)
    assert 0.1 < raw.abs().max() < 10 and (raw[0] - raw[1]).abs().max() > 1e-4   # a face and noise differ
    out = smirk_encoder.encode(face_and_noise)
    assert out.shape == (2, 55) and out.dtype == torch.float32 and out.device.type == "cpu"
    torch.testing.assert_close(out, postprocess(raw), atol=0, rtol=0)
    torch.testing.assert_close(smirk_encoder.encode(face_and_noise[0]), out[:1], atol=1e-5, rtol=0)   # one [3,H,W]


def test_encoder_in_another_dtype_still_returns_float32(smirk_file, smirk_encoder):
    wide = load_smirk_encoder(smirk_file, dtype=torch.float64)
    assert wide.expression_layers[0].weight.dtype == torch.float64
    assert wide.encoder.bn1.num_batches_tracked.dtype == torch.long
    x = crop_for_smirk(astronaut_rgb(), face_landmarks())[None, :, :64, :64]
    with torch.no_grad():   # a small input keeps float64 on the CPU quick; the dtype path is what is tested
        torch.testing.assert_close(wide(x.double()).float(), smirk_encoder(x), atol=1e-4, rtol=1e-4)
    # crops of another dtype are cast to the model's; the result is float32 either way
    face = x.new_zeros(1, 3, 224, 224)
    face[:, :, :64, :64] = x
    out = smirk_encoder.encode(face.double())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, smirk_encoder.encode(face), atol=0, rtol=0)


def _edit(path: Path, change) -> Path:
    sd = torch.load(path, weights_only=True)
    change(sd)
    torch.save(sd, path)
    return path


def test_missing_key_is_an_error(tmp_path):
    path = write_smirk_checkpoint(tmp_path / "SMIRK_em1.pt")
    _edit(path, lambda sd: sd.pop(CHECKPOINT_PREFIX + "encoder.blocks.3.2.bn2.running_var"))
    with pytest.raises(CorruptWeightsError, match=r"missing 1 tensors.*blocks\.3\.2\.bn2\.running_var.*SMIRK_em1\.pt"):
        load_smirk_encoder(path)


def test_unexpected_encoder_key_is_an_error(tmp_path):
    path = write_smirk_checkpoint(tmp_path / "SMIRK_em1.pt")
    _edit(path, lambda sd: sd.__setitem__(CHECKPOINT_PREFIX + "encoder.conv_head.weight", torch.zeros(1280, 960, 1, 1)))
    with pytest.raises(CorruptWeightsError, match=r"unexpected 1 \['encoder\.conv_head\.weight'\]"):
        load_smirk_encoder(path)


def test_wrong_shape_is_an_error(tmp_path):
    path = write_smirk_checkpoint(tmp_path / "SMIRK_em1.pt")
    _edit(path, lambda sd: sd.__setitem__(CHECKPOINT_PREFIX + "expression_layers.0.weight", torch.zeros(58, 960)))
    with pytest.raises(CorruptWeightsError, match=r"expression_layers\.0\.weight: \(58, 960\) instead of \(55, 960\)"):
        load_smirk_encoder(path)


def test_file_without_encoder_keys_says_which_file_is_needed(tmp_path):
    path = tmp_path / "SMIRK_em1.pt"
    torch.save({k: torch.zeros(shape) for k, shape in DECOYS.items() if "expression" not in k}, path)
    with pytest.raises(CorruptWeightsError) as err:
        load_smirk_encoder(path)
    text = str(err.value)
    assert str(path) in text and CHECKPOINT_PREFIX in text and "SMIRK_em1.pt" in text
    assert "github.com/georgeretsi/smirk" in text


def test_bare_encoder_state_dict_is_refused(tmp_path):
    # the prefix is required: a file of bare 'encoder.*' keys is some other MobileNet, not SMIRK's checkpoint
    path = tmp_path / "mobilenet.pt"
    torch.save(random_expression_encoder_state_dict(seed=0), path)
    with pytest.raises(CorruptWeightsError, match="no SMIRK expression-encoder weights"):
        load_smirk_encoder(path)


def test_nan_in_the_encoder_is_refused(tmp_path):
    path = write_smirk_checkpoint(tmp_path / "SMIRK_em1.pt")
    _edit(path, lambda sd: sd[CHECKPOINT_PREFIX + "encoder.blocks.6.0.bn1.bias"].__setitem__(5, float("nan")))
    with pytest.raises(CorruptWeightsError, match="blocks.6.0.bn1.bias.*NaN"):
        load_smirk_encoder(path)


def test_truncated_file_is_a_clear_error(tmp_path):
    path = write_smirk_checkpoint(tmp_path / "SMIRK_em1.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptWeightsError, match="truncated or corrupt"):
        load_smirk_encoder(path)


# -------------------------------------------------------------------------------------------------------- postprocess

def test_postprocess_on_hand_made_values():
    raw = torch.zeros(2, 55)
    raw[0, :50] = torch.linspace(-3, 3, 50)
    raw[0, 50:55] = torch.tensor([-0.5, 1.7, -0.3, 0.5, -0.7])
    raw[1, 50:55] = torch.tensor([0.25, 1.0, 0.35, 0.1, -0.2])
    out = postprocess(raw)
    torch.testing.assert_close(out[0, :50], torch.linspace(-3, 3, 50), atol=0, rtol=0)   # expression untouched
    torch.testing.assert_close(out[0, 50:], torch.tensor([0.0, 1.0, 0.0, 0.2, -0.2]), atol=0, rtol=0)
    torch.testing.assert_close(out[1, 50:], torch.tensor([0.25, 1.0, 0.35, 0.1, -0.2]), atol=0, rtol=0)
    with pytest.raises(InvalidInputError, match="size 55"):
        postprocess(torch.zeros(1, 54))


@pytest.mark.parametrize("bad, message", [
    (torch.rand(1, 3, 112, 112), r"\[N, 3, 224, 224\]"),
    (torch.rand(1, 224, 224, 3), r"\[N, 3, 224, 224\]"),
    (torch.rand(1, 3, 224, 224) * 255, "divide by 255"),
    (torch.full((1, 3, 224, 224), float("nan")), "NaN"),
    (torch.zeros(1, 3, 224, 224, dtype=torch.uint8), "floats"),
    (torch.zeros(0, 3, 224, 224), "empty"),
])
def test_bad_crops_are_refused(smirk_encoder, bad, message):
    with pytest.raises(InvalidInputError, match=message):
        smirk_encoder.encode(bad)


# ---------------------------------------------------------------------------------------------------------------- crop

def face_landmarks(left=180.0, right=266.0, brow_top=92.0, chin=186.0, seed=0) -> np.ndarray:
    """68 points spanning a given box: jaw ends at left/right, a brow point at the top, the chin at the bottom, the
    rest strictly inside."""
    rng = np.random.default_rng(seed)
    pts = np.column_stack([rng.uniform(left, right, 68), rng.uniform(brow_top, chin, 68)])
    mid_x, mid_y = (left + right) / 2, (brow_top + chin) / 2
    pts = (pts - (mid_x, mid_y)) * 0.9 + (mid_x, mid_y)
    pts[0] = (left, mid_y)
    pts[16] = (right, mid_y)
    pts[8] = (mid_x, chin)
    pts[19] = (mid_x - 0.2 * (right - left), brow_top)
    return pts


def expected_matrix(landmarks: np.ndarray, scale: float = 1.4, size: int = 224) -> np.ndarray:
    """SMIRK's crop written out: box (top raised for the forehead), square side int(mean side * scale), maps the
    square's top-left corner to (0, 0) and its side to size - 1 pixels."""
    left, right = landmarks[:, 0].min(), landmarks[:, 0].max()
    top, bottom = landmarks[:, 1].min(), landmarks[:, 1].max()
    top = top - 0.16 * (bottom - top)
    side = int(((right - left) + (bottom - top)) / 2 * scale)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    s = (size - 1) / side
    return np.array([[s, 0, -s * (cx - side / 2)], [0, s, -s * (cy - side / 2)], [0, 0, 1]])


@pytest.mark.parametrize("box", [(180.0, 266.0, 92.0, 186.0), (10.5, 63.25, 40.0, 111.0), (300.0, 301.5, 50.0, 52.0)])
def test_crop_transform_matches_the_formula(box):
    lmk = face_landmarks(*box)
    tform = smirk_crop_transform(lmk)
    np.testing.assert_allclose(tform.params, expected_matrix(lmk), atol=1e-9)
    # a 3-column (x, y, z) array gives the same crop: z is ignored
    lmk3 = np.column_stack([lmk, np.arange(68.0)])
    np.testing.assert_allclose(smirk_crop_transform(lmk3).params, tform.params, atol=0)


def test_crop_transform_scale_and_size_arguments():
    lmk = face_landmarks()
    tform = smirk_crop_transform(lmk, scale=2.0, size=112)
    np.testing.assert_allclose(tform.params, expected_matrix(lmk, 2.0, 112), atol=1e-9)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((5, 2)), r"Expected 68 face landmarks as an array \[68, 2\] .* got shape \(5, 2\)"),
    (np.zeros((68,)), r"got shape \(68,\)"),
    (np.full((68, 2), np.nan), "landmarks contain NaN or infinite values"),
    (np.zeros((68, 4)), r"got shape \(68, 4\)"),
])
def test_bad_landmarks_are_refused(bad, message):
    with pytest.raises(InvalidInputError, match=message):
        smirk_crop_transform(bad)


def test_degenerate_landmarks_are_refused():
    with pytest.raises(InvalidInputError, match="no area"):
        smirk_crop_transform(np.full((68, 2), 100.0))


def test_crop_is_the_warp_with_the_hand_made_matrix():
    from skimage.transform import AffineTransform, warp

    image = astronaut_rgb()
    lmk = face_landmarks()
    crop = crop_for_smirk(image, lmk, channel_order="rgb")
    assert crop.shape == (3, 224, 224) and crop.dtype == torch.float32
    pixels = crop * 255
    torch.testing.assert_close(pixels, pixels.round(), atol=1e-4, rtol=0)   # uint8 values / 255
    by_hand = AffineTransform(matrix=expected_matrix(lmk))
    ref = warp(image, by_hand.inverse, output_shape=(224, 224), preserve_range=True).astype(np.uint8)
    ours = (pixels.round().to(torch.uint8).permute(1, 2, 0)).numpy()
    # warp truncates to uint8: a matrix differing in the last bits may flip a value sitting on an integer by one
    diff = np.abs(ours.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    # the centre of the forehead-extended box (x 180..266, y 92 - 0.16 * 94..186) lands at the crop's centre
    centre = smirk_crop_transform(lmk)(np.array([[223.0, (92.0 - 0.16 * 94.0 + 186.0) / 2]]))
    np.testing.assert_allclose(centre, [[111.5, 111.5]], atol=1e-9)


def test_default_channel_order_is_bgr_like_the_arc2face_demo():
    image = astronaut_rgb()
    lmk = face_landmarks()
    default = crop_for_smirk(image, lmk)
    bgr = crop_for_smirk(image, lmk, channel_order="bgr")
    rgb = crop_for_smirk(image, lmk, channel_order="RGB")
    torch.testing.assert_close(default, bgr, atol=0, rtol=0)
    torch.testing.assert_close(bgr, rgb.flip(0), atol=0, rtol=0)
    assert (rgb[0] - rgb[2]).abs().mean() > 0.05   # the channels really differ, so the swap is visible
    with pytest.raises(InvalidInputError, match="channel_order"):
        crop_for_smirk(image, lmk, channel_order="yuv")


def test_crop_outside_the_image_is_black():
    image = np.full((64, 64, 3), 200, np.uint8)
    lmk = face_landmarks(left=0, right=24, brow_top=4, chin=28)   # the 1.4x crop reaches past the top-left corner
    crop = crop_for_smirk(image, lmk, channel_order="rgb")
    assert float(crop[:, 0, 0].max()) == 0.0 and float(crop[:, 223, 223].min()) == pytest.approx(200 / 255)


def test_crop_batch_and_bad_images():
    image = astronaut_rgb()
    lmk = face_landmarks()
    batch = crops_for_smirk([image, image[:, ::-1].copy()], [lmk, lmk])
    assert batch.shape == (2, 3, 224, 224)
    torch.testing.assert_close(batch[0], crop_for_smirk(image, lmk), atol=0, rtol=0)
    with pytest.raises(InvalidInputError, match="uint8 RGB"):
        crop_for_smirk(image.astype(np.float32) / 255, lmk)
    with pytest.raises(InvalidInputError, match="2 images but 1"):
        crops_for_smirk([image, image], [lmk])


# --------------------------------------------------------------------------------------------------- timm equivalence

def test_backbone_equals_timm():
    """Bit-for-bit against timm's own model (random weights and BN statistics), run with ComfyUI's interpreter."""
    comfy = os.environ.get("COMFYUI_DIR")
    if not comfy:
        pytest.skip("set COMFYUI_DIR to a ComfyUI whose venv has timm to compare with timm itself")
    python = Path(comfy) / "venv" / "bin" / "python"
    if not python.exists():
        pytest.skip(f"{python} not found")
    has_timm = subprocess.run([str(python), "-c", "import timm"], capture_output=True)
    if has_timm.returncode != 0:
        pytest.skip(f"timm cannot be imported by {python}")
    run = subprocess.run([str(python), str(TESTS / "smirk_timm_check.py")], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["channels"] == result["our_channels"] == [16, 24, 40, 112, 960]
    assert result["reductions"] == result["our_reductions"] == [2, 4, 8, 16, 32]
    assert all(entry["same_shapes"] for entry in result["sizes"].values())
    assert result["max_abs_diff"] <= 1e-5, result
    # the random SMIRK_em1.pt of the tests is laid out as timm's model, and the pack's forward on it is timm's
    assert result["recorded_layout_is_timms"] and result["builder_uses_timm"], result
    assert result["checkpoint_forward_max_abs_diff"] <= 1e-5 and result["checkpoint_forward_scale"] > 0.1, result
