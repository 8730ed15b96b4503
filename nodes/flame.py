"""FLAME: the head model the pose ControlNet's hints were rendered from, supplied by the user, and its normal maps."""

from __future__ import annotations

from .model_cache import cached_patcher, file_key, files_state

CATEGORY = "Arc2Face"
FLAME_FILE_NOTE = ("FLAME 2020's generic_model.pkl from flame.is.tue.mpg.de (registration; non-commercial licence; "
                   "never downloaded by the pack), at models/arc2face/flame/generic_model.pkl")
HINT_TOOLTIP = "The whole-head normal map as RGB on 127 grey, 512x512, for Arc2Face Pose ControlNet."

_FLAME_CACHE: dict = {}   # one FLAME model (~30 MB of tensors), keyed by its files; ComfyUI manages its device


def flame_patcher(path):
    """The FLAME model of ``path`` under ComfyUI's memory manager, loaded once while its files (the eyelid shapes
    beside it too) stay the same."""
    from ..arc2face_core.pose.flame import EYELID_FILES, load_flame

    key = file_key(path, *(path.parent / name for name in EYELID_FILES))
    return cached_patcher(_FLAME_CACHE, key, lambda: load_flame(path))


def hints_to_image(hints):
    """uint8 [N, H, W, 3] hints -> ComfyUI IMAGE (float 0..1 on the intermediate device)."""
    import torch

    from .comfy_internals import model_management as mm

    return (torch.from_numpy(hints).float() / 255).to(mm.intermediate_device())


def render_flame(flame, params):
    """The FLAME hints of ``params`` with the model loaded where ComfyUI wants it."""
    from ..arc2face_core.errors import InvalidInputError
    from ..arc2face_core.pose.flame import FlameModel
    from ..arc2face_core.pose.flame_hint import flame_normal_maps
    from .comfy_internals import model_management as mm

    if not isinstance(getattr(flame, "model", None), FlameModel):
        raise InvalidInputError(f"flame must come from Arc2Face FLAME Loader, got {type(flame).__name__}")
    mm.load_models_gpu([flame])
    return hints_to_image(flame_normal_maps(flame.model, params))


class Arc2FaceFLAMELoader:
    DESCRIPTION = ("Loads FLAME, the head model the pose ControlNet's training hints were rendered from: "
                   + FLAME_FILE_NOTE + ". The pickle is read without chumpy by a reader that builds only arrays and "
                   "never runs code from the file. SMIRK's eyelid shapes (l_eyelid.npy, r_eyelid.npy from SMIRK's "
                   "assets folder) are used when they lie beside it; without them closed eyelids render open. Managed "
                   "by ComfyUI's memory manager.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("ARC2FACE_FLAME",)
    RETURN_NAMES = ("flame",)
    OUTPUT_TOOLTIPS = ("FLAME 2020 (LBS with SMIRK's 300 shape and 50 expression components), for the normal-map "
                       "nodes.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    @classmethod
    def IS_CHANGED(cls, **inputs):   # no inputs: without this ComfyUI would keep a replaced or added file's old model
        from ..arc2face_core.pose.flame import EYELID_FILES
        from ..arc2face_core.weights import FLAME
        from .comfy_paths import model_roots

        return files_state(FLAME, roots=model_roots().arc2face, beside=EYELID_FILES)

    def load(self):
        from ..arc2face_core.weights import FLAME, find_weight
        from .comfy_paths import model_roots

        return (flame_patcher(find_weight(FLAME, model_roots().arc2face)),)


class Arc2FaceNormalMapFromFLAME:
    DESCRIPTION = ("The pose hint as the reference made it (EMOCA's recipe on FLAME): the whole FLAME head (scalp, "
                   "ears, neck, eyeballs) posed by FLAME parameters, rendered as interpolated world-space normals on "
                   "127 grey, 512x512. The head shape comes from identity_params (the identity photo, as the reference "
                   "demo does) or from pose_params; pose, jaw, expression, eyelids and camera from pose_params. "
                   "Parameters read from a photo are framed by SMIRK's camera and crop in that photo's FFHQ-aligned "
                   "frame; parameters without a photo are framed as FFHQ alignment would (eyes and mouth placed like "
                   "image_align's).")
    CATEGORY = CATEGORY
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("normal_map",)
    OUTPUT_TOOLTIPS = ("One hint per row of pose_params. " + HINT_TOOLTIP,)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "flame": ("ARC2FACE_FLAME", {"tooltip": "From Arc2Face FLAME Loader."}),
                "pose_params": ("ARC2FACE_FACE_PARAMS", {"tooltip": (
                    "FLAME parameters of the pose reference (e.g. Face Parameters from Photo (SMIRK) on it): its "
                    "pose, jaw, expression, eyelids and camera; its shape too unless identity_params is given.")}),
            },
            "optional": {
                "identity_params": ("ARC2FACE_FACE_PARAMS", {"tooltip": (
                    "FLAME parameters of the identity photo: only its head shape is used (one for all pose rows, "
                    "or one per row).")}),
            },
        }

    def render(self, flame, pose_params, identity_params=None):
        from ..arc2face_core.errors import InvalidInputError
        from ..arc2face_core.pose.face_parameters import FaceParameters

        for name, value in (("pose_params", pose_params), ("identity_params", identity_params)):
            if value is not None and not isinstance(value, FaceParameters):
                raise InvalidInputError(f"{name} must be FLAME face parameters, got {type(value).__name__}")
        params = pose_params if identity_params is None else pose_params.with_shape_of(identity_params)
        return (render_flame(flame, params),)


NODE_CLASS_MAPPINGS = {"Arc2FaceFLAMELoader": Arc2FaceFLAMELoader,
                       "Arc2FaceNormalMapFromFLAME": Arc2FaceNormalMapFromFLAME}
NODE_DISPLAY_NAME_MAPPINGS = {"Arc2FaceFLAMELoader": "Arc2Face FLAME Loader",
                              "Arc2FaceNormalMapFromFLAME": "Normal Map from FLAME"}
