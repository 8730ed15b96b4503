"""Face Parameters from Photo (SMIRK) in a real ComfyUI: the aligned photo and SMIRK's crop it outputs, its
expression driving the Expression Adapter, and the MediaPipe crop choice."""

from __future__ import annotations

import numpy as np
from PIL import Image

from comfyui_client import identities_prompt, sampler, save_latent, tag
from fixtures_comfyui import rigged_reference_landmarks


def _prompt(prefix: str, crop_landmarks: str = "auto (MediaPipe if installed)", batch: bool = False) -> dict:
    """identities → Face Parameters from Photo on the pose reference → aligned/crops saved; expression → Expression
    Adapter → Arc2Face Sampler (64 px, 2 steps) → SaveLatent."""
    prompt = identities_prompt(["arc2face_face.png"])
    prompt.update({
        "40": {"class_type": "LoadImage", "inputs": {"image": "arc2face_pose_reference.png"}},
        "41": {"class_type": "Arc2FaceFaceParametersFromPhoto", "inputs": {
            "arcface": ["2", 0], "image": ["40", 0], "face": "largest", "channel_order": "bgr (Arc2Face demo)",
            "crop_landmarks": crop_landmarks}},
        "42": {"class_type": "SaveImage", "inputs": {"images": ["41", 2], "filename_prefix": f"fp/{prefix}_aligned"}},
        "43": {"class_type": "SaveImage", "inputs": {"images": ["41", 3], "filename_prefix": f"fp/{prefix}_crops"}},
        "44": {"class_type": "Arc2FaceExpressionAdapterLoader", "inputs": {}},
        "45": {"class_type": "Arc2FaceExpressionAdapter", "inputs": {
            "model": ["1", 0], "adapter": ["44", 0], "expression": ["41", 1], "weight": 1.0,
            "start_percent": 0.0, "end_percent": 1.0}},
        "46": sampler(["6", 0], ["6", 1], model=["45", 0]),
    })
    if batch:   # three photos in one batch (an odd count, one row each); the adapter reads the single photo's
        prompt["47"] = {"class_type": "ImageBatch", "inputs": {"image1": ["40", 0], "image2": ["40", 0]}}
        prompt["48"] = {"class_type": "ImageBatch", "inputs": {"image1": ["47", 0], "image2": ["40", 0]}}
        prompt["50"] = dict(prompt["41"], inputs=dict(prompt["41"]["inputs"]))
        prompt["41"]["inputs"]["image"] = ["48", 0]
        prompt["45"]["inputs"]["expression"] = ["50", 1]
    save_latent(prompt, "49", "46", prefix)
    return prompt


def _expected_crop(points: np.ndarray) -> np.ndarray:
    """SMIRK's crop_face on the 68-point box, its top raised by 0.16 of the height (the 68-point fallback)."""
    left, right = points[:, 0].min(), points[:, 0].max()
    top, bottom = points[:, 1].min(), points[:, 1].max()
    top -= 0.16 * (bottom - top)
    side = int(((right - left) + (bottom - top)) / 2 * 1.4)
    s = 223 / side
    return np.array([[s, 0, -s * ((left + right) / 2 - side / 2)], [0, s, -s * ((top + bottom) / 2 - side / 2)],
                     [0, 0, 1]])


def test_face_parameters_node_outputs_the_aligned_photo_and_smirks_crop(comfy, comfy_install):
    from skimage.transform import AffineTransform, warp

    from arc2face_core.faces.ffhq import image_align
    from arc2face_core.pose.smirk_photo import landmarks_in_aligned
    from builders.onnx_faces import astronaut_rgb

    t = tag()
    entry = comfy.run_ok(_prompt(t, batch=True))
    aligned_files, crop_files = comfy.saved_images(entry, "42"), comfy.saved_images(entry, "43")
    assert len(aligned_files) == 3 and len(crop_files) == 3
    aligned = np.asarray(Image.open(aligned_files[1]).convert("RGB"))
    crop = np.asarray(Image.open(crop_files[1]).convert("RGB"))
    assert aligned.shape == (512, 512, 3) and crop.shape == (224, 224, 3)

    # the server's 1k3d68 is rigged to report this face; the aligned photo is its FFHQ alignment
    landmarks = rigged_reference_landmarks()
    ffhq = image_align(astronaut_rgb(), landmarks[:, :2])
    diff = np.abs(aligned.astype(int) - ffhq.image.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    # SMIRK's crop of the aligned photo, from the landmarks carried into it (no MediaPipe in ComfyUI's venv)
    matrix = _expected_crop(landmarks_in_aligned(landmarks, ffhq.quad))
    expected = warp(ffhq.image, AffineTransform(matrix=matrix).inverse, output_shape=(224, 224),
                    preserve_range=True).astype(np.uint8)
    diff = np.abs(crop.astype(int) - expected.astype(int))
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01
    assert comfy.saved_latent(t).shape == (1, 4, 8, 8)
    log = (comfy_install / "arc2face_integration.log").read_text()
    assert "SMIRK crop from insightface 68 points" in log


def test_mediapipe_crop_asked_for_without_its_file_says_where_to_get_it(comfy):
    error = comfy.run_error(_prompt(tag(), crop_landmarks="mediapipe (as SMIRK)"))
    assert "MediaPipe face landmarker (face_landmarker.task) not found" in error, error
    assert "smirk/face_landmarker.task" in error and "Apache-2.0" in error, error


def test_a_smirk_file_without_the_pose_encoder_is_a_clear_error(comfy, comfy_install, tmp_path):
    """The expression-only checkpoint serves Expression from Photo but not the whole encoder: the message names it."""
    import torch

    path = comfy_install / "ComfyUI" / "models" / "arc2face" / "smirk" / "SMIRK_em1.pt"
    original = path.read_bytes()
    try:
        sd = torch.load(path, weights_only=True)
        torch.save({k: v for k, v in sd.items() if not k.startswith("smirk_encoder.pose_encoder.")}, path)
        error = comfy.run_error(_prompt(tag()))
    finally:
        path.write_bytes(original)
    assert "CorruptWeightsError" in error and "no SMIRK pose-encoder weights" in error, error
