"""Pose control: the Arc2Face pose ControlNet, its normal-map hint, and normal maps rendered without EMOCA."""

from __future__ import annotations

from .comfy_internals import get, key, require
from .comfy_paths import download_switch

CATEGORY = "Arc2Face"
HINT_UPSCALE = "bilinear"   # normal maps are smooth; ComfyUI's default nearest-exact would make them blocky


class Arc2FaceControlNetLoader:
    DESCRIPTION = ("Loads the Arc2Face pose ControlNet (models/arc2face/controlnet/, diffusers format) through "
                   "ComfyUI's own ControlNet loader, so it is memory-managed like any ControlNet. The file also works "
                   "with the stock Load ControlNet Model (put it in models/controlnet).")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("CONTROL_NET",)
    RETURN_NAMES = ("control_net",)
    OUTPUT_TOOLTIPS = ("The pose ControlNet, for Arc2Face Pose ControlNet.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {},
            "optional": download_switch("controlnet/ (config and weights)"),
        }

    @classmethod
    def IS_CHANGED(cls, **inputs):   # a replaced file is loaded again (ComfyUI caches a loader by its inputs only)
        from ..arc2face_core.weights import CONTROLNET
        from .comfy_paths import model_roots
        from .model_cache import files_state

        return files_state(CONTROLNET, roots=model_roots().arc2face, beside=("config.json",))

    def load(self, download_missing: bool = False):
        from ..arc2face_core.checkpoints import check_safetensors_file
        from ..arc2face_core.errors import WrongModelError
        from ..arc2face_core.weights import CONTROLNET, HF_URL, find_weight
        from .comfy_paths import model_roots

        path = find_weight(CONTROLNET, model_roots().arc2face, download=download_missing)
        check_safetensors_file(path, source=HF_URL)   # ComfyUI's loader would name no file
        control_net = get("comfy.controlnet:load_controlnet")(str(path))
        if control_net is None:
            raise WrongModelError(f"ComfyUI did not recognise {path} as a ControlNet; is it Arc2Face's "
                                  "controlnet/diffusion_pytorch_model.safetensors?")
        return (control_net,)


class Arc2FacePoseControlNet:
    DESCRIPTION = ("Applies the pose ControlNet to both halves of classifier-free guidance, as the reference "
                   "pipeline does, on top of ControlNets already on the conditioning. The normal map is prepared as "
                   "the model was trained: head normals as RGB (n*0.5+0.5) on 127 grey (alpha, black or white "
                   "backgrounds become that grey), square (padded with grey), 512 px. One normal map for all "
                   "identities, or one per identity.")
    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ("The identity conditioning with the pose control.", "The negative with the pose control.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": "From Arc2Face Encoder (one row per identity)."}),
                "negative": ("CONDITIONING", {"tooltip": "From Arc2Face Encoder."}),
                "control_net": ("CONTROL_NET", {"tooltip": "The Arc2Face pose ControlNet."}),
                "normal_map": ("IMAGE", {"tooltip": (
                    "Head normals as RGB in the FFHQ-aligned frame: from Normal Map from FLAME / from Angles / from "
                    "Photo, or an EMOCA render made elsewhere. Batch 1 (all identities) or one per identity.")}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01,
                                       "tooltip": "Control scale (the reference uses 1.0; 0 turns it off)."}),
                "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                            "tooltip": "Where in the sampling the control starts (0 = first step)."}),
                "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                          "tooltip": "Where in the sampling the control ends (1 = last step)."}),
            }
        }

    def apply(self, positive, negative, control_net, normal_map, strength, start_percent, end_percent):
        from ..arc2face_core.batching import identity_count
        from ..arc2face_core.errors import InvalidInputError
        from ..arc2face_core.pose.hint import check_hint_batch, prepare_normal_map

        if start_percent > end_percent:
            raise InvalidInputError(f"start_percent ({start_percent}) is after end_percent ({end_percent}): the "
                                    "control would never act")
        hint = prepare_normal_map(normal_map)
        check_hint_batch(hint.shape[0], identity_count([cond.shape[0] for cond, _ in positive]))
        if strength == 0:
            return (positive, negative)
        require("comfy.controlnet:ControlNet.copy", "comfy.controlnet:ControlBase.set_cond_hint",
                "comfy.controlnet:ControlBase.set_previous_controlnet")
        hint = hint.movedim(-1, 1)
        attached = {}   # previous ControlNet → our copy: positive and negative share it, so they batch together

        def attach(conditioning):
            out = []
            for cond, options in conditioning:
                options = dict(options)
                previous = options.get(key("control"))
                if previous not in attached:
                    control = control_net.copy().set_cond_hint(hint, strength, (start_percent, end_percent))
                    control.upscale_algorithm = HINT_UPSCALE
                    control.set_previous_controlnet(previous)
                    attached[previous] = control
                options[key("control")] = attached[previous]
                options[key("control_apply_to_uncond")] = False
                out.append([cond, options])
            return out

        return (attach(positive), attach(negative))


GENERIC_NOTE = ("Without FLAME the hint is the pack's generic adult head, built in code from published head and "
                "face measurements (no FLAME data): cranium, ears, neck, eyeballs behind the eyelids, nose with "
                "nostrils, lips with a mouth line; its jaw opens and its eyelids close with an expression. It is "
                "rendered exactly as EMOCA rendered FLAME (all faces, z-buffer, interpolated world normals on 127 "
                "grey, FFHQ framing); it is not the person's own head. EMOCA renders made elsewhere can be loaded as "
                "plain images instead.")
ROLL_NOTE = ("FFHQ alignment levels the eyes, so the hints the ControlNet was trained on have almost no roll: a typed "
             "roll turns the head in the frame, which the model follows only loosely (expect a tilted face or an "
             "upright one at a slightly different place); keep it 0 for an upright face.")


class Arc2FaceNormalMapFromAngles:
    DESCRIPTION = ("A whole-head normal-map hint for the pose ControlNet from a head pose typed in degrees "
                   "(insightface's convention: yaw > 0 turns the nose to image right, pitch > 0 up, roll > 0 "
                   "clockwise), placed as FFHQ alignment would place a photo of that head (eyes and mouth where "
                   "image_align puts them). With a FLAME model (Arc2Face FLAME Loader) it renders the FLAME head, "
                   "posed and with the optional expression, exactly as the reference's hints were made, so one "
                   "expression can drive both the hint and the Expression Adapter. " + GENERIC_NOTE + " " + ROLL_NOTE)
    CATEGORY = CATEGORY
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("normal_map",)
    OUTPUT_TOOLTIPS = ("Whole-head normals as RGB on 127 grey, 512x512, for Arc2Face Pose ControlNet: one per "
                       "expression row (one without an expression).",)

    @classmethod
    def INPUT_TYPES(cls):
        def angle(limit, what):
            return ("FLOAT", {"default": 0.0, "min": -limit, "max": limit, "step": 0.5, "tooltip": what})

        return {
            "required": {
                "yaw": angle(90.0, "Left/right turn in degrees; > 0 turns the nose to the image's right."),
                "pitch": angle(60.0, "Up/down nod in degrees; > 0 lifts the chin (looks up)."),
                "roll": angle(45.0, "Head tilt in the image plane in degrees; > 0 is clockwise. " + ROLL_NOTE),
            },
            "optional": {
                "expression": ("ARC2FACE_EXPRESSION", {"tooltip": (
                    "FLAME expression [N, 55] (e.g. the one given to the Expression Adapter), one hint per row. With "
                    "FLAME the head takes all of it; without FLAME the generic head takes its jaw opening and eyelids "
                    "(the 50 other coefficients need FLAME).")}),
                "flame": ("ARC2FACE_FLAME", {"tooltip": (
                    "From Arc2Face FLAME Loader: render the FLAME head (the reference's recipe) instead of the "
                    "generic head.")}),
            },
        }

    def render(self, yaw: float, pitch: float, roll: float, expression=None, flame=None):
        import torch

        if flame is not None:
            from ..arc2face_core.pose.flame_hint import typed_face_parameters
            from .flame import render_flame

            return (render_flame(flame, typed_face_parameters(pitch, yaw, roll, expression)),)
        from ..arc2face_core.pose.render import typed_normal_maps

        if expression is not None:
            from ..arc2face_core.expression.vectors import check_expression_ranges, validate_expression

            # the same ranges as the Expression Adapter: the generic head takes the jaw and eyelids too
            check_expression_ranges(validate_expression(expression))
        return (torch.from_numpy(typed_normal_maps(pitch, yaw, roll, expression)).float() / 255,)


class Arc2FaceNormalMapFromPhoto:
    DESCRIPTION = ("A whole-head normal hint for the pose ControlNet from the head pose of a reference photo: "
                   "insightface detects the face and antelopev2's 1k3d68.onnx gives its 68 3D landmarks and pose "
                   "(loaded on first use from models/insightface/models/antelopev2/). The hint is framed like FFHQ "
                   "alignment of the photo, as the reference pipeline does. " + GENERIC_NOTE)
    CATEGORY = CATEGORY
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE", "FLOAT", "FLOAT", "FLOAT")
    RETURN_NAMES = ("normal_map", "yaw", "pitch", "roll")
    OUTPUT_TOOLTIPS = ("One whole-head normal hint per photo, 512x512.",
                       "Yaw of the first photo's face, degrees (to fine-tune in Normal Map from Angles).",
                       "Pitch of the first photo's face, degrees.", "Roll of the first photo's face, degrees.")

    @classmethod
    def INPUT_TYPES(cls):
        from .faces import FACE_CHOICES

        return {
            "required": {
                "arcface": ("ARCFACE", {"tooltip": "From Arc2Face ArcFace Loader (its face detector is used)."}),
                "image": ("IMAGE", {"tooltip": "Reference photo(s) for the pose; one hint per photo."}),
                "face": (FACE_CHOICES, {"default": "largest", "tooltip": (
                    "Which face when a photo shows several: the largest, or an index from the left (0 = leftmost).")}),
                "shape": (["mean face", "reference face"], {"default": "mean face", "tooltip": (
                    "mean face: the generic head at the reference's pose. reference face: that head shaped like the "
                    "reference's 68 landmarks too: its mouth opening, eyelids and face shape.")}),
            }
        }

    def render(self, arcface, image, face: str, shape: str):
        import torch

        from ..arc2face_core.faces.landmarks import landmark_model_for
        from ..arc2face_core.images import to_bgr_uint8_batch
        from ..arc2face_core.pose.render import normal_maps_from_photos
        from .comfy_paths import model_roots

        landmarks = landmark_model_for(arcface, model_roots())
        hints, poses = normal_maps_from_photos(to_bgr_uint8_batch(image), arcface, landmarks, face,
                                               own_shape=shape == "reference face")
        first = poses[0]
        return (torch.from_numpy(hints), first.yaw, first.pitch, first.roll)


NODE_CLASS_MAPPINGS = {"Arc2FaceControlNetLoader": Arc2FaceControlNetLoader,
                       "Arc2FacePoseControlNet": Arc2FacePoseControlNet,
                       "Arc2FaceNormalMapFromAngles": Arc2FaceNormalMapFromAngles,
                       "Arc2FaceNormalMapFromPhoto": Arc2FaceNormalMapFromPhoto}
NODE_DISPLAY_NAME_MAPPINGS = {"Arc2FaceControlNetLoader": "Arc2Face Pose ControlNet Loader",
                              "Arc2FacePoseControlNet": "Arc2Face Pose ControlNet",
                              "Arc2FaceNormalMapFromAngles": "Normal Map from Angles",
                              "Arc2FaceNormalMapFromPhoto": "Normal Map from Photo"}
