"""``python -m arc2face_core dataset``: prepare a dataset folder, make this run's batches (here, or on Ray), finish.

1. Everything checkable without the models (files, options, the Ray cluster's size) is checked; then the settings
   are published in ``dataset.json`` or, when it exists, compared with it: a run with other settings is refused with
   the list of differences, before anything heavy loads, unless no batch was recorded yet (then it starts over).
2. The identities are published in ``identities.safetensors`` or read from it (``identities``).
3. The records are checked (a damaged manifest reopens the dataset; ``--verify`` reads the images back, ``verify``)
   and the batches of this run (all, or one ``--shard``) that have no whole record are made (``generation``), on
   this machine or as Ray tasks (``ray_runner``).
4. When every batch of the dataset is done (by this run or others), ``manifest.jsonl`` is written; a summary ends
   the run. A run that made batches adds its speed to ``runs.jsonl`` (``runs``). A run that finds the dataset
   finished writes the report (``report``; again when it made batches) and, with ``--format rec``, the RecordIO set
   (``pack``, a no-op when it is there).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from .. import __version__
from ..diffusers_backend.devices import dtype_name, resolve_device
from ..errors import InvalidInputError, WeightsNotFoundError
from ..weights import ModelRoots
from .config import DatasetConfig, differences
from .generation import load_face_analyzer, load_maker
from .identities import prepare_identities
from .plan import Batch, make_batches, shard_batches
from .progress import ProgressBar, RunStats, format_summary
from .report import needs_report, write_report
from .runs import record_run
from .seeds import __doc__ as SEEDS_DOC
from .store import IDENTITIES_FILE, SETTINGS_FILE, DatasetStore, clear_unfinished, has_finished_batch, publish

DATASET_FORMAT = "arc2face.dataset"


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How this run works on the dataset (not part of the dataset's settings)."""

    shard: tuple[int, int] = (0, 1)
    ray: bool = False
    ray_address: Optional[str] = None
    prepare_only: bool = False
    format: str = "folder"            # "rec": also pack the finished dataset as RecordIO (pack.py)
    pack_full_images: bool = False    # pack the full images when there are no crops
    pack_layout: str = "insightface"
    report: bool = True
    verify: bool = False              # read back the images of recorded batches, make damaged ones again


def model_files(config: DatasetConfig, roots: ModelRoots) -> dict[str, str]:
    """Every file the dataset's pixels depend on, found (not loaded; the VAE's header read): a missing or wrong one is
    reported before anything is written."""
    from ..diffusers_backend.controlnet import find_controlnet
    from ..diffusers_backend.model_files import check_vae, find_unet
    from ..identity.encoder import find_id_encoder
    from ..weights import DETECTOR, find_arcface_recogniser, find_weight

    files = {"unet": str(find_unet(roots.arc2face, download=config.download)[0]),
             "encoder": str(find_id_encoder(roots.arc2face, download=config.download)[0]), "vae": str(config.vae)}
    check_vae(config.vae)   # missing, cut short, or not a VAE at all (a UNet, a LoRA): refused from its header
    if config.hint is not None:
        files["controlnet"] = str(find_controlnet(roots.arc2face, download=config.download)[0])
    if config.lora is not None:
        if not config.lora.is_file():
            raise WeightsNotFoundError(f"LoRA file not found: {config.lora}. Pass the .safetensors file itself, e.g. "
                                       "models/loras/lcm-lora-sdv1-5.safetensors (python -m arc2face_core.cli.downloads "
                                       "--with lcm puts it there)")
        files["lora"] = str(config.lora)
    if config.score:
        files["detector"] = str(find_weight(DETECTOR, roots.insightface))
        files["arcface"] = str(find_arcface_recogniser(roots.arc2face, roots.insightface, download=config.download))
    return files


def identity_count(config: DatasetConfig) -> int:
    if config.identities is not None:
        return config.identities
    from ..identity.files import load_embeddings

    return load_embeddings(config.embeddings)[0].shape[0]


def stored_settings(out: Path) -> dict:
    """The settings dataset.json holds ({} before the first run)."""
    path = out / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
        settings = record["settings"] if record.get("format") == DATASET_FORMAT else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInputError(f"{path} is not a dataset record ({exc}): choose another --out") from exc
    if not isinstance(settings, dict):
        raise InvalidInputError(f"{path} is not a dataset record: choose another --out")
    return settings


def check_settings(out: Path, settings: dict, say=lambda text: None) -> bool:
    """Publish the dataset's settings, or refuse a run whose settings differ from the published ones; True when
    this call published them. A folder where no batch was recorded yet (a start that failed, or was stopped while
    sampling identities) takes the new settings: what the old start left is removed first (``say`` tells)."""
    wanted = json.loads(json.dumps(settings))
    changed = differences(stored_settings(out), wanted) if (out / SETTINGS_FILE).is_file() else []
    if changed and not has_finished_batch(out):
        say(f"{out}: no batch was made with the settings in {SETTINGS_FILE}; starting over with these (" +
            "; ".join(changed) + ")")
        clear_unfinished(out)
        changed = []
    import diffusers

    mode = (wanted.get("sampling") or {}).get("scheduler", "dpmpp_2m")
    record = {"format": DATASET_FORMAT, "version": 1, "mode": mode, "settings": wanted, "seeds": SEEDS_DOC.strip(),
              "made_with": {"arc2face_core": __version__, "python": platform.python_version(),
                            "torch": torch.__version__, "diffusers": diffusers.__version__},
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = out / SETTINGS_FILE
    published = publish(path, json.dumps(record, indent=2).encode())
    changed = changed or differences(stored_settings(out), wanted)   # another process may have published first
    if changed:
        raise InvalidInputError(f"{out} holds a dataset made with other settings ({path}); this run would mix two "
                                "recipes. Use the same options to continue it, or another --out. Differences "
                                "(stored -> asked):\n  " + "\n  ".join(changed))
    return published


def check_identity_source(config: DatasetConfig) -> None:
    """The --pca source must exist (what it holds is read when the identities are sampled)."""
    if config.pca is not None and not config.pca.exists():
        from .store import PCA_FILE

        raise InvalidInputError(f"--pca {config.pca} does not exist: give a folder of photos, an embeddings file or "
                                f"a saved PCA ({PCA_FILE})")


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A dataset folder ready for its batches."""

    config: DatasetConfig          # with the device, dtype and thread count resolved
    identities: torch.Tensor
    batches: list[Batch]
    store: DatasetStore


def prepare(config: DatasetConfig, session=None) -> Prepared:
    """Steps 1 and 2 of the module docstring. Everything that can be checked without the big models is checked
    before the first file is written, so a refused start leaves the folder as it was; nothing heavy is loaded before
    the settings are known to agree."""
    out = config.out
    device, dtype = _device_and_dtype(config, session)
    threads = None
    if device.type == "cpu":   # the dataset's thread count (see config), else this machine's (or Ray node's)
        default = session.node_cpus if session is not None else torch.get_num_threads()
        threads = config.cpu_threads or stored_settings(out).get("cpu_threads") or default
    config = dataclasses.replace(config, device=str(device) if session is None else device.type, dtype=dtype,
                                 cpu_threads=threads)
    if session is not None:
        session.check(config)   # each task must fit on one node
    files = model_files(config, ModelRoots.under(config.models))
    count = identity_count(config)
    if config.hint is not None and config.hint.shape[0] not in (1, count):
        from ..pose.hint import check_hint_batch

        check_hint_batch(config.hint.shape[0], count)
    check_identity_source(config)
    settings = config.settings(count, device, dtype, files)
    out.mkdir(parents=True, exist_ok=True)   # the first write
    published = check_settings(out, settings, _warn)
    try:
        identities, _ = prepare_identities(config, out, lambda: load_face_analyzer(config))
    except Exception:
        if published and not (out / IDENTITIES_FILE).exists():   # nothing made yet: let a corrected run start over
            (out / SETTINGS_FILE).unlink(missing_ok=True)
        raise
    batches = make_batches(count, config.ids_per_batch)
    store = DatasetStore(out, count, config.images_per_id, len(batches), ids_per_batch=config.ids_per_batch)
    return Prepared(config, identities, batches, store)


def check_records(config: DatasetConfig, store: DatasetStore, mine: list[Batch], verify: bool) -> None:
    """Before choosing what to make: a damaged manifest reopens the dataset (``store.check_manifest``) and, with
    ``--verify``, the batches of this run whose images are damaged lose their records; all of them are then made
    again like missing batches."""
    for note in store.check_manifest():
        _warn(note)
    if verify:
        from .verify import damaged_batches

        checked, bad = damaged_batches(store, [b.index for b in mine], config.width, config.height)
        for batch, problem in sorted(bad.items()):
            _warn(f"--verify: {problem}: batch {batch} is made again")
        store.forget(bad)
        _say(config, f"--verify: read back the images of {checked} recorded batches, {len(bad)} damaged")


def _makes_crops(config: DatasetConfig) -> bool:
    """Whether the run writes the 112x112 ArcFace crops (``--crop arcface``)."""
    return config.crop == "arcface"


def make_dataset(config: DatasetConfig, options: RunOptions = RunOptions()) -> int:
    config.check()
    DatasetStore.check_root(config.out)
    if options.ray and options.shard != (0, 1):
        raise InvalidInputError("--ray splits the dataset over its workers itself; --shard is for separate jobs")
    if options.format == "rec":
        from .pack import LAYOUTS, check_pack_request

        check_pack_request(_makes_crops(config), options.pack_full_images)
        if options.pack_layout not in LAYOUTS:
            raise InvalidInputError(f"--pack-layout must be one of {', '.join(LAYOUTS)}, got {options.pack_layout!r}")
    session = None
    if options.ray:
        from .ray_runner import RaySession

        session = RaySession.start(options.ray_address)
        _say(config, session.describe())
    try:
        ready = prepare(config, session)
        config, store = ready.config, ready.store
        if options.prepare_only:
            _say(config, f"prepared {config.out}: {len(ready.identities)} identities in {len(ready.batches)} batches "
                         f"({SETTINGS_FILE}, identities.safetensors); start the shards now")
            return 0
        mine = ready.batches if session else shard_batches(ready.batches, *options.shard)
        check_records(config, store, mine, options.verify)
        todo = [b for b in mine if not store.batch_done(b.index)]
        noted = list(store.notes)
        for note in noted:
            _warn(note)
        images = sum(len(b.identities) for b in todo) * config.images_per_id
        label = "dataset" if options.shard == (0, 1) else f"shard {options.shard[0]}/{options.shard[1]}"
        _say(config, f"{config.out}: {len(mine) - len(todo)} of {len(mine)} batches already done; making {images} "
                     "images")
        progress = ProgressBar(images, label, config.quiet)
        if not todo:
            stats = RunStats()
        elif session is not None:
            stats = session.run(config, ready.identities, store, todo, progress)
        else:
            if config.cpu_threads:
                torch.set_num_threads(config.cpu_threads)
            stats = load_maker(config, ready.identities, store).run(todo, progress.advance)
    finally:
        if session is not None:
            session.close()
    complete = store.assemble_manifest()
    for note in store.notes[len(noted):]:
        _warn(note)
    record_run(config.out, stats, "ray" if session is not None else label, str(config.device), str(config.dtype))
    if not complete:
        _say(config, f"{store.done_batches()} of {store.batches} batches of the dataset are done; manifest.jsonl is "
                     "written when the last one is")
    _say(config, format_summary(stats, store.read_rows() if complete else None))
    if complete:
        finish(config, options, made_batches=stats.batches > 0)
    return 0


def finish(config: DatasetConfig, options: RunOptions, made_batches: bool) -> None:
    """What a finished dataset gets: the RecordIO set (``--format rec``), then the report."""
    if options.format == "rec":
        from .pack import pack_dataset

        pack_dataset(config.out, layout=options.pack_layout, full_images=options.pack_full_images,
                     quiet=config.quiet)
    if options.report and needs_report(config.out, made_batches):
        write_report(config.out, quiet=config.quiet)


def _device_and_dtype(config: DatasetConfig, session) -> tuple[torch.device, str]:
    """This machine's device, or on Ray the workers' kind (a GPU each where the cluster has GPUs); dtype by name."""
    if session is None:
        device, dtype = resolve_device(config.device, config.dtype)
        return device, dtype_name(dtype)
    if config.device not in ("auto", "cuda", "cpu"):
        raise InvalidInputError(f"with --ray, --device is auto, cuda or cpu (each worker gets its own GPU), got "
                                f"{config.device!r}")
    if config.device == "cuda" and not session.gpus:
        raise InvalidInputError("--device cuda was asked for, but the Ray cluster has no GPUs")
    device = torch.device("cuda" if session.gpus and config.device != "cpu" else "cpu")
    if config.dtype == "auto":
        return device, "fp16" if device.type == "cuda" else "fp32"
    resolve_device("cpu", config.dtype)   # checks the name
    return device, config.dtype


def _say(config: DatasetConfig, text: str) -> None:
    if not config.quiet:
        print(text, file=sys.stderr, flush=True)


def _warn(text: str) -> None:
    """What was found damaged or replaced: said also with --quiet."""
    print(f"arc2face: warning: {text}", file=sys.stderr, flush=True)
