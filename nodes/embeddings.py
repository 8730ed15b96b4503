"""Identity arithmetic nodes: blend two people, average several photos, interpolate, sample random identities."""

from __future__ import annotations

from ..arc2face_core.identity.embeddings import AVERAGE_METHODS, BLEND_METHODS

CATEGORY = "Arc2Face"
METHOD_TOOLTIP = ("slerp: walk the great circle between the two unit vectors (even steps in angle); linear: mix "
                  "the vectors and re-normalise (the paper's Fig. 10).")


class Arc2FaceEmbeddingBlend:
    DESCRIPTION = ("Mixes two identities (paper Fig. 10). Batches pair row by row; a batch of 1 is paired with "
                   "every row of the other. Output rows are unit vectors.")
    CATEGORY = CATEGORY
    FUNCTION = "blend"
    RETURN_TYPES = ("ARCFACE_EMBEDS",)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("The blended identities, one per pair of input rows.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "embeds_a": ("ARCFACE_EMBEDS", {"tooltip": "First identity (weight 0)."}),
                "embeds_b": ("ARCFACE_EMBEDS", {"tooltip": "Second identity (weight 1)."}),
                "weight": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                     "tooltip": "Share of embeds_b: 0 gives a, 1 gives b."}),
                "method": (list(BLEND_METHODS), {"default": "slerp", "tooltip": METHOD_TOOLTIP}),
            }
        }

    def blend(self, embeds_a, embeds_b, weight, method):
        from ..arc2face_core.identity.embeddings import blend

        return (blend(embeds_a, embeds_b, weight, method),)


class Arc2FaceEmbeddingInterpolate:
    DESCRIPTION = ("A batch of identities morphing from a to b in evenly spaced steps (both ends included), for an "
                   "interpolation strip. Feed it to Arc2Face Encoder: one image per step.")
    CATEGORY = CATEGORY
    FUNCTION = "interpolate"
    RETURN_TYPES = ("ARCFACE_EMBEDS",)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("steps identities from a to b, [steps, 512].",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "embeds_a": ("ARCFACE_EMBEDS", {"tooltip": "Start identity (one row)."}),
                "embeds_b": ("ARCFACE_EMBEDS", {"tooltip": "End identity (one row)."}),
                "steps": ("INT", {"default": 5, "min": 1, "max": 256,
                                  "tooltip": "Number of identities, a and b included."}),
                "method": (list(BLEND_METHODS), {"default": "slerp", "tooltip": METHOD_TOOLTIP}),
            }
        }

    def interpolate(self, embeds_a, embeds_b, steps, method):
        from ..arc2face_core.identity.embeddings import blend, interpolation_weights

        return (blend(embeds_a, embeds_b, interpolation_weights(steps), method),)


class Arc2FaceEmbeddingAverage:
    DESCRIPTION = ("One identity from several photos of the same person (paper Fig. 13: more photos, higher "
                   "fidelity). Each embedding is normalised before averaging and the result re-normalised.")
    CATEGORY = CATEGORY
    FUNCTION = "average"
    RETURN_TYPES = ("ARCFACE_EMBEDS",)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("The averaged identity, [1, 512].",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "embeds": ("ARCFACE_EMBEDS", {"tooltip": "Embeddings of several photos of one person."}),
                "method": (list(AVERAGE_METHODS), {"default": "mean", "tooltip": (
                    "mean: the paper's average. median / trimmed_mean (drops the extreme 20% per dimension): "
                    "robust when one photo is poor.")}),
            }
        }

    def average(self, embeds, method):
        from ..arc2face_core.identity.embeddings import average

        return (average(embeds, method),)


class Arc2FaceRandomIdentity:
    DESCRIPTION = ("Seeded random identities (random unit vectors): synthetic people for datasets. A simple "
                   "stand-in for the paper's PCA sampler of WebFace42M embeddings, which was not released.")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("ARCFACE_EMBEDS",)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("count random identities, [count, 512].",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                                 "tooltip": "The same seed always gives the same people."}),
                "count": ("INT", {"default": 1, "min": 1, "max": 4096, "tooltip": "Number of identities."}),
            }
        }

    def sample(self, seed, count):
        from ..arc2face_core.identity.embeddings import random_identities

        return (random_identities(count, seed),)


NODE_CLASS_MAPPINGS = {
    "Arc2FaceEmbeddingBlend": Arc2FaceEmbeddingBlend,
    "Arc2FaceEmbeddingInterpolate": Arc2FaceEmbeddingInterpolate,
    "Arc2FaceEmbeddingAverage": Arc2FaceEmbeddingAverage,
    "Arc2FaceRandomIdentity": Arc2FaceRandomIdentity,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "Arc2FaceEmbeddingBlend": "Embedding Blend",
    "Arc2FaceEmbeddingInterpolate": "Embedding Interpolate",
    "Arc2FaceEmbeddingAverage": "Embedding Average",
    "Arc2FaceRandomIdentity": "Random Identity",
}
