"""One loaded model per node family, reused while its files stay the same and handed to ComfyUI's memory manager."""

from __future__ import annotations

from pathlib import Path
from typing import Callable


def file_key(*paths: Path) -> tuple:
    """What identifies the files' contents cheaply: (path, mtime, size) of each; a missing file counts as (path, None,
    None), so its appearing later changes the key."""
    key = []
    for path in paths:
        try:
            stat = path.stat()
            key.append((str(path), stat.st_mtime_ns, stat.st_size))
        except OSError:
            key.append((str(path), None, None))
    return tuple(key)


def files_state(*specs, roots, beside: tuple[str, ...] = ()) -> str:
    """A loader's IS_CHANGED value: the file key of every place its files are looked for (and of the ``beside`` files
    next to each), so ComfyUI runs the loader again when a file is added, replaced or deleted, and reuses its output
    while nothing changed. ``specs`` are WeightSpecs; ``roots`` the model folders searched."""
    from ..arc2face_core.weights import candidate_paths

    paths = [path for spec in specs for path in candidate_paths(spec, roots)]
    return repr(file_key(*paths, *(path.parent / name for path in paths for name in beside)))


def cached_patcher(cache: dict, key: tuple, build: Callable[[], object]):
    """The ModelPatcher kept in ``cache`` under ``key``, or a new one around ``build()`` replacing whatever the cache
    held (one model per cache: a changed file is reloaded, the old model is let go)."""
    if key not in cache:
        from .comfy_internals import get
        from .comfy_internals import model_management as mm

        cache.clear()
        cache[key] = get("comfy.model_patcher:ModelPatcher")(build(), load_device=mm.get_torch_device(),
                                                             offload_device=mm.unet_offload_device())
    return cache[key]
