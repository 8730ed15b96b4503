"""Identities as files: Save Embeddings writes ComfyUI's output folder, Load Embeddings reads the input folder (and
the output folder, annotated ``[output]``). One format with the command line (``arc2face_core.identity.files``)."""

from __future__ import annotations

import os

from .comfy_internals import folder_paths, get

CATEGORY = "Arc2Face"
OUTPUT_MARK = " [output]"


# path -> (mtime_ns, size, whether it holds identities): ComfyUI lists the files on every /object_info, and reading
# each .safetensors header every time made that slow beside thousands of files; a header is read again only when its
# file changed.
_LISTED: dict[str, tuple[int, int, bool]] = {}


def _identity_files(root: str) -> list[str]:
    """Relative paths (with /) of the files under ``root`` that can be read as identities, sorted."""
    from ..arc2face_core.identity.files import SUFFIXES, looks_like_identities

    found, seen = [], set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.endswith(SUFFIXES) or name.startswith("."):
                continue
            path = os.path.join(folder, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue
            known = _LISTED.get(path)
            if known is None or known[:2] != (stat.st_mtime_ns, stat.st_size):
                known = _LISTED[path] = (stat.st_mtime_ns, stat.st_size, looks_like_identities(path))
            seen.add(path)
            if known[2]:
                found.append(os.path.relpath(path, root).replace(os.sep, "/"))
    for gone in [p for p in _LISTED if p.startswith(os.path.join(root, "")) and p not in seen]:
        del _LISTED[gone]
    return sorted(found)


def _resolve(name: str) -> str:
    """The file behind a listed name, kept inside its folder (input, or output when annotated)."""
    from ..arc2face_core.weights import safe_join

    if name.endswith(OUTPUT_MARK):
        return str(safe_join(folder_paths.get_output_directory(), name[:-len(OUTPUT_MARK)]))
    return str(safe_join(folder_paths.get_input_directory(), name))


class Arc2FaceSaveEmbeddings:
    DESCRIPTION = ("Saves identities (ArcFace embeddings) to ComfyUI's output folder as <prefix>_00001_.safetensors: "
                   "an 'embeddings' tensor [N, 512] with how they were made (this prompt) in its metadata. The "
                   "command line reads the same files (--embeddings), and Load Embeddings lists them, so a person, a "
                   "blend or a sampled population is reused anywhere.")
    CATEGORY = CATEGORY
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    RETURN_NAMES = ()
    OUTPUT_TOOLTIPS = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "embeds": ("ARCFACE_EMBEDS", {"tooltip": "The identities to save."}),
                "filename_prefix": ("STRING", {"default": "arc2face/identities", "tooltip": (
                    "File name in the output folder; a counter is added. Subfolders with '/'.")}),
            },
            "hidden": {"prompt": "PROMPT"},
        }

    def save(self, embeds, filename_prefix: str, prompt=None):
        from ..arc2face_core.errors import InvalidInputError
        from ..arc2face_core.identity.files import save_embeddings

        stem = filename_prefix.strip().replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        if not stem or stem.startswith("."):   # "" would write ._00001_.safetensors: hidden, so never listed
            raise InvalidInputError(
                f"Save Embeddings: filename_prefix {filename_prefix!r} gives no file name, or one starting with '.' "
                "(a hidden file, which Load Embeddings does not list). Give the file a name, e.g. arc2face/identities.")
        output = folder_paths.get_output_directory()
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, output)
        name = f"{filename}_{counter:05}_.safetensors"
        source = {"made_by": "ComfyUI Save Embeddings"}
        if prompt is not None and not get("comfy.cli_args:args").disable_metadata:
            source["prompt"] = prompt
        save_embeddings(os.path.join(folder, name), embeds, source)
        return {"ui": {"embeddings": [{"filename": name, "subfolder": subfolder, "type": "output"}]}}


class Arc2FaceLoadEmbeddings:
    DESCRIPTION = ("Loads identities saved by Save Embeddings, the command line (identities.safetensors, "
                   "embeddings.pt) or a dataset, from ComfyUI's input folder or, marked [output], its output folder. "
                   "Rows come out L2-normalised, ready for Arc2Face Encoder.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("ARCFACE_EMBEDS",)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("The identities of the file, [N, 512].",)

    @classmethod
    def INPUT_TYPES(cls):
        files = _identity_files(folder_paths.get_input_directory())
        files += [f"{name}{OUTPUT_MARK}" for name in _identity_files(folder_paths.get_output_directory())]
        return {
            "required": {
                "embeddings": (files, {"tooltip": (
                    "An identities file: .safetensors with an 'embeddings' tensor [N, 512], or an older .pt. Put it in "
                    "ComfyUI's input folder; Save Embeddings' files are listed with [output].")}),
            }
        }

    @classmethod
    def IS_CHANGED(cls, embeddings: str):
        path = _resolve(embeddings)
        stat = os.stat(path) if os.path.isfile(path) else None
        return f"{stat.st_mtime_ns}-{stat.st_size}" if stat else embeddings

    def load(self, embeddings: str):
        from ..arc2face_core.identity.files import load_embeddings

        return (load_embeddings(_resolve(embeddings))[0],)


NODE_CLASS_MAPPINGS = {"Arc2FaceSaveEmbeddings": Arc2FaceSaveEmbeddings,
                       "Arc2FaceLoadEmbeddings": Arc2FaceLoadEmbeddings}
NODE_DISPLAY_NAME_MAPPINGS = {"Arc2FaceSaveEmbeddings": "Save Embeddings",
                              "Arc2FaceLoadEmbeddings": "Load Embeddings"}
