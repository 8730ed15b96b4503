"""The paper's identity check in a graph: score each image against its identity, keep the images that pass."""

from __future__ import annotations

import logging

CATEGORY = "Arc2Face"
DEFAULT_THRESHOLD = 0.4


class Arc2FaceIdentitySimilarity:
    DESCRIPTION = ("The paper's identity metric: the ArcFace cosine similarity of each image to the identity it was "
                   "made from, with Arc2Face's own arcface.onnx after detection and alignment (1 = the same face "
                   "vector). Images pair with identities as the Arc2Face Sampler lays them out (images_per_id per "
                   "identity); one identity is compared with every image. An image without a face scores -1.0 and the "
                   "report names it. Follow with Filter by Identity to keep the faithful ones.")
    CATEGORY = CATEGORY
    FUNCTION = "score"
    RETURN_TYPES = ("FLOAT", "STRING")
    RETURN_NAMES = ("scores", "report")
    OUTPUT_IS_LIST = (True, False)
    OUTPUT_TOOLTIPS = ("One similarity per image, as a list (-1.0 where no face was found): for Filter by Identity.",
                       "A readable report: each image's score, the mean, spread and range, the images without a face.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "arcface": ("ARCFACE", {"tooltip": "From Arc2Face ArcFace Loader: the same face analysis as the "
                                                   "input photos."}),
                "images": ("IMAGE", {"tooltip": "The generated images (decoded), grouped by identity."}),
                "embeds": ("ARCFACE_EMBEDS", {"tooltip": "The identities the images were made from (the embeddings "
                                                         "fed to Arc2Face Encoder)."}),
                "images_per_id": ("INT", {"default": 1, "min": 1, "max": 4096, "tooltip": (
                    "Images of each identity, as set in the Arc2Face Sampler (ignored with a single identity).")}),
            }
        }

    def score(self, arcface, images, embeds, images_per_id: int):
        from ..arc2face_core.faces.similarity import score_identities

        result = score_identities(arcface, images, embeds, images_per_id)
        return (result.scores, result.report())


class Arc2FaceFilterByIdentity:
    DESCRIPTION = ("Keeps the images whose identity similarity (from Identity Similarity) is at least threshold, in "
                   "their order; images without a face (-1.0) never pass a threshold above -1. Takes the images and "
                   "scores as whole lists, so it runs once per batch. When none passes, the nodes after it are "
                   "skipped (nothing is saved) and the console says so.")
    CATEGORY = CATEGORY
    FUNCTION = "filter"
    INPUT_IS_LIST = True
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The images that pass, in their order (none: the nodes after this one are skipped).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images Identity Similarity scored."}),
                "scores": ("FLOAT", {"forceInput": True, "tooltip": "The scores output of Identity Similarity."}),
                "threshold": ("FLOAT", {"default": DEFAULT_THRESHOLD, "min": -1.0, "max": 1.0, "step": 0.01,
                                        "tooltip": (
                    "Lowest similarity kept. ArcFace verifiers usually call two faces one person around 0.3-0.4; "
                    "the paper keeps synthetic identities apart below 0.3.")}),
            }
        }

    def filter(self, images, scores, threshold):
        from ..arc2face_core.errors import InvalidInputError
        from ..arc2face_core.faces.similarity import filter_by_scores

        if len(set(threshold)) != 1:   # a list input: one value, unless a list was wired in on purpose
            raise InvalidInputError(f"Filter by Identity takes one threshold, got {list(threshold)}")
        kept, _ = filter_by_scores(images, scores, threshold[0])
        if kept.shape[0]:
            return (kept,)
        # Stock nodes (Save Image, Preview Image) fail on an empty batch: skip them, as ComfyUI means it to be done.
        logging.getLogger(__name__).warning("Filter by Identity: none of %d images reached %.8g (best %.8g); the "
                                            "nodes after it are skipped", len(scores), threshold[0], max(scores))
        from .comfy_internals import get

        return (get("comfy_execution.graph_utils:ExecutionBlocker")(None),)


NODE_CLASS_MAPPINGS = {"Arc2FaceIdentitySimilarity": Arc2FaceIdentitySimilarity,
                       "Arc2FaceFilterByIdentity": Arc2FaceFilterByIdentity}
NODE_DISPLAY_NAME_MAPPINGS = {"Arc2FaceIdentitySimilarity": "Identity Similarity",
                              "Arc2FaceFilterByIdentity": "Filter by Identity"}
