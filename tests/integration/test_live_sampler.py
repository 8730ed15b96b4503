"""The Arc2Face Sampler's optional inputs in a real ComfyUI: a starting latent with a noise mask and denoise < 1, and
the batch_index a latent slice carries. The reference is always the stock KSampler on the same inputs, laid out with
ComfyUI's own latent nodes (Repeat Latent Batch, Latent From Batch)."""

from __future__ import annotations

import numpy as np

from comfyui_client import empty_latent, identities_prompt, ksampler, sampler, save_latent, tag


def _identity_b_alone(prompt: dict) -> None:
    """Nodes 20-21: identity b (photo node 4) embedded and encoded on its own."""
    prompt["20"] = {"class_type": "Arc2FaceArcFaceEmbed", "inputs": {"arcface": ["2", 0], "image": ["4", 0],
                                                                    "face": "largest"}}
    prompt["21"] = {"class_type": "Arc2FaceEncoder", "inputs": {"encoder": ["1", 1], "embeds": ["20", 0]}}


def test_img2img_with_a_noise_mask_and_denoise_is_ksamplers(comfy):
    """One shared starting latent (a photo through the VAE) with a soft noise mask, denoise 0.6, 2 identities x 2
    images: identity b's images equal the stock KSampler on identity b alone, given the same latent repeated to the
    4-image batch and sliced to rows 2-3 (their noise). Dropping the latent, the mask or denoise would change them."""
    t = tag()
    prompt = identities_prompt(["arc2face_person_a.png", "arc2face_person_b.png"])
    _identity_b_alone(prompt)
    prompt.update({
        "50": {"class_type": "LoadImage", "inputs": {"image": "arc2face_face.png"}},
        "51": {"class_type": "ImageScale", "inputs": {"image": ["50", 0], "upscale_method": "bilinear", "width": 64,
                                                      "height": 64, "crop": "disabled"}},
        "52": {"class_type": "VAELoader", "inputs": {"vae_name": "sd15_vae.safetensors"}},
        "53": {"class_type": "VAEEncode", "inputs": {"pixels": ["51", 0], "vae": ["52", 0]}},
        "54": {"class_type": "LoadImage", "inputs": {"image": "arc2face_normals_turned.png"}},
        "55": {"class_type": "ImageToMask", "inputs": {"image": ["54", 0], "channel": "red"}},   # soft, 0..1
        "56": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["53", 0], "mask": ["55", 0]}},
        "57": sampler(["6", 0], ["6", 1], images_per_id=2, latent_image=["56", 0], denoise=0.6),
        "58": {"class_type": "RepeatLatentBatch", "inputs": {"samples": ["56", 0], "amount": 4}},
        "59": {"class_type": "LatentFromBatch", "inputs": {"samples": ["58", 0], "batch_index": 2, "length": 2}},
        "60": ksampler(["21", 0], ["21", 1], ["59", 0], denoise=0.6),
    })
    save_latent(prompt, "61", "57", f"i_{t}")
    save_latent(prompt, "62", "60", f"k_{t}")
    save_latent(prompt, "63", "53", f"s_{t}")
    comfy.run_ok(prompt)
    ours, stock, start = (comfy.saved_latent(f"{p}_{t}") for p in "iks")
    assert ours.shape == (4, 4, 8, 8) and stock.shape == (2, 4, 8, 8)
    np.testing.assert_allclose(ours[2:].numpy(), stock.numpy(), rtol=1e-4, atol=1e-3)
    assert not np.allclose(ours[0].numpy(), ours[2].numpy(), atol=1e-2)      # two identities
    assert not np.allclose(ours[2].numpy(), ours[3].numpy(), atol=1e-2)      # two noises
    assert np.abs(ours.numpy() - start.numpy()).max() > 1e-2                  # it did sample


def test_batch_index_keeps_the_noise_of_the_bigger_batch(comfy):
    """A latent slice (Latent From Batch) keeps its place: with images_per_id 1 the Sampler equals KSampler on it to
    the bit; and identity b's row of a 2-identity run (batch_index 1) with images_per_id 2 gets the images the 2 x 2
    run made for identity b (noise indices 2 and 3)."""
    t = tag()
    prompt = identities_prompt(["arc2face_person_a.png", "arc2face_person_b.png"])
    _identity_b_alone(prompt)
    prompt.update({
        "70": empty_latent(4),
        "71": {"class_type": "LatentFromBatch", "inputs": {"samples": ["70", 0], "batch_index": 2, "length": 2}},
        "72": sampler(["6", 0], ["6", 1], latent_image=["71", 0]),
        "73": ksampler(["6", 0], ["6", 1], ["71", 0]),
        "74": sampler(["6", 0], ["6", 1], images_per_id=2),
        "75": empty_latent(2),
        "76": {"class_type": "LatentFromBatch", "inputs": {"samples": ["75", 0], "batch_index": 1, "length": 1}},
        "77": sampler(["21", 0], ["21", 1], images_per_id=2, latent_image=["76", 0]),
    })
    for node, source, prefix in (("80", "72", "a"), ("81", "73", "k"), ("82", "74", "g"), ("83", "77", "b")):
        save_latent(prompt, node, source, f"{prefix}_{t}")
    comfy.run_ok(prompt)
    ours, stock, grouped, again = (comfy.saved_latent(f"{p}_{t}") for p in "akgb")
    assert np.array_equal(ours.numpy(), stock.numpy())
    assert again.shape == (2, 4, 8, 8)
    np.testing.assert_allclose(again.numpy(), grouped[2:].numpy(), rtol=1e-4, atol=1e-3)
    assert not np.allclose(again.numpy(), grouped[:2].numpy(), atol=1e-2)
