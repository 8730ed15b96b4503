"""``dataset --ray [ADDRESS]``: the batches as Ray tasks, all writing one dataset folder on shared storage.

Ray is an optional extra (``pip install "arc2face[ray]"``), imported only here. The driver (the ``dataset`` command)
prepares the folder (settings, identities) as a local run does, then splits the batches still to do into one
consecutive run per worker: one worker per GPU of the cluster where it has GPUs, else one per ``--cpu-threads`` CPUs
(the dataset's torch thread count, so workers compute exactly as a local run). Each task loads the models once, reads the identities from the folder and makes its
batches exactly as a local run would (same batches, same seeds: the same files). A task whose worker or node is lost
is run again (``TASK_RETRIES``) and, as any restart, skips the batches already recorded. The driver shows one progress
bar for all workers, counted from the batch records on disk.

When this command starts the Ray connection, the package travels to the workers with the job (Ray's
``py_modules``), so every worker runs the driver's code. When the caller has already called ``ray.init`` (a script, a
test), the workers import it from the driver's folder (``PYTHONPATH``), which must then be on shared storage, unless
the caller passed ``runtime_env={"py_modules": [arc2face_core]}`` itself or installed the pack on the workers. The
workers need torch, diffusers, transformers, insightface and onnxruntime installed, and the models folder and the
output folder at the same paths (shared storage).
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Optional

import torch

from ..errors import Arc2FaceError, InvalidInputError
from .config import DatasetConfig
from .plan import Batch, shard_batches
from .progress import ProgressBar, RunStats
from .store import IDENTITIES_FILE, DatasetStore

CONNECT_TIMEOUT_S = 15.0    # to reach a given cluster's address before giving up
TASK_RETRIES = 3            # runs of a task after its worker died (Ray retries lost workers, not user errors)
POLL_S = 1.0


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise InvalidInputError('--ray needs Ray, an optional extra: pip install "arc2face[ray]" (or: pip install '
                                f'"ray[default]"). ({exc})') from exc
    return ray


def _make_batches(config: DatasetConfig, identities: int, batch_count: int, batches: list[Batch]) -> RunStats:
    """One Ray task: the models once, then the batches (skipping those done, e.g. before a lost worker)."""
    from ..identity.files import load_embeddings
    from .generation import load_maker

    if config.device == "cpu":
        torch.set_num_threads(config.cpu_threads)
    store = DatasetStore(config.out, identities, config.images_per_id, batch_count, ids_per_batch=config.ids_per_batch)
    embeds, _ = load_embeddings(config.out / IDENTITIES_FILE)
    return load_maker(config, embeds, store).run(batches)


def _address_to_use(address: Optional[str]) -> str:
    """What ``ray.init`` is given: without an address, ``RAY_ADDRESS`` when set, else ``local`` (a new Ray on this
    machine; Ray itself would join whatever cluster its last-cluster file names, even a stale one)."""
    if address:
        return address
    return os.environ.get("RAY_ADDRESS") or "local"


def _dialled(address: str) -> str:
    """host:port that Ray dials for ``address``: it reads ``auto`` from RAY_ADDRESS or the file ``ray start`` leaves,
    and replaces 127.0.0.1 and localhost with this node's address (Ray's own helper, private: without it, the
    address as given)."""
    if "://" in address:    # ray://HOST:PORT, a Ray Client server
        return address.split("://", 1)[1]
    try:
        from ray._private.services import canonicalize_bootstrap_address_or_die
    except ImportError:
        return address
    try:
        return canonicalize_bootstrap_address_or_die(address)
    except ConnectionError:    # "auto" with no cluster to find
        raise InvalidInputError(f"--ray {address}: Ray finds no cluster this machine belongs to (no RAY_ADDRESS, no "
                                f"running `ray start`). {_HOW_TO_CONNECT}") from None
    except ValueError as exc:
        raise InvalidInputError(f"--ray {address}: not a Ray address ({exc}); give HOST:PORT, e.g. "
                                "10.0.0.5:6379, or auto") from None


_HOW_TO_CONNECT = ("Start the cluster (ray start --head on its head node), give the address `ray status` shows "
                   "there, or leave out the address to start a local Ray on this machine.")


def _check_answers(given: str, dialled: str) -> None:
    """Refuse, within ``CONNECT_TIMEOUT_S``, an address where nothing listens (``ray.init`` would retry for many
    minutes before failing with a bare ConnectionError)."""
    host, _, port = dialled.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        shown = given if given == dialled else f"{given} (which Ray dials as {dialled})"
        reason = (f"no answer within {CONNECT_TIMEOUT_S:.0f} s" if isinstance(exc, socket.timeout)
                  else getattr(exc, "strerror", None) or str(exc))
        raise InvalidInputError(f"--ray {shown}: no Ray cluster answers there ({reason}). {_HOW_TO_CONNECT}") from None


class RaySession:
    """A connection to a Ray cluster (started here, or one the caller already initialised)."""

    def __init__(self, started: bool, gpus: int, cpus: int, node_cpus: int, address: str = "") -> None:
        self.started, self.gpus, self.cpus = started, gpus, cpus
        self.node_cpus = node_cpus      # CPUs of the smallest node: the most one task can be given anywhere
        self.address = address          # "local", what --ray was given (or RAY_ADDRESS), "" when the caller's

    @staticmethod
    def package() -> Path:
        return Path(__file__).resolve().parents[1]

    @classmethod
    def start(cls, address: Optional[str]) -> "RaySession":
        """Connect to ``address`` (``auto``: the cluster this machine belongs to; None: ``RAY_ADDRESS``, else a
        new local one, never the cluster Ray's last-cluster file names); an already initialised Ray is used as it
        is. An address where no cluster answers is refused within ``CONNECT_TIMEOUT_S``, naming it."""
        ray = _import_ray()
        started = not ray.is_initialized()
        target = ""
        if started:
            target = _address_to_use(address)
            if target != "local":
                _check_answers(target, _dialled(target))
            try:
                ray.init(address=target, include_dashboard=False, logging_level=logging.WARNING,
                         runtime_env={"py_modules": [str(cls.package())]})
            except Exception as exc:   # Ray raises ConnectionError, RuntimeError, TimeoutError...
                what = "start a local Ray" if target == "local" else f"connect to the Ray cluster at {target}"
                detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise InvalidInputError(f"--ray: could not {what} ({type(exc).__name__}: {detail}). "
                                        f"{_HOW_TO_CONNECT}") from exc
        resources = ray.cluster_resources()
        nodes = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")] or [resources.get("CPU", 1)]
        return cls(started, int(resources.get("GPU", 0)), int(resources.get("CPU", 1)), max(1, int(min(nodes))),
                   target)

    def describe(self) -> str:
        where = {"local": "a local Ray started on this machine", "": "the Ray already initialised"}.get(
            self.address, f"the Ray cluster at {self.address}")
        return f"Ray: {where}, {self.cpus} CPUs and {self.gpus} GPUs"

    def check(self, config: DatasetConfig) -> None:
        """Refuse settings no worker can run (before the dataset folder is touched)."""
        if config.device != "cuda":
            self._cpus(config)

    def workers(self, config: DatasetConfig) -> int:
        return self.gpus if config.device == "cuda" else max(1, self.cpus // self._cpus(config))

    def _cpus(self, config: DatasetConfig) -> int:
        if config.cpu_threads > self.node_cpus:   # a task must fit on one node, or Ray waits for it forever
            raise InvalidInputError(f"--cpu-threads {config.cpu_threads}: the smallest node of the Ray cluster has "
                                    f"{self.node_cpus} CPUs; use at most that many threads per worker")
        return config.cpu_threads

    def task_options(self, config: DatasetConfig) -> dict:
        options = {"max_retries": TASK_RETRIES, "retry_exceptions": False}
        if not self.started:   # see the module docstring
            path = os.pathsep.join(filter(None, [str(self.package().parent), os.environ.get("PYTHONPATH")]))
            options["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
        if config.device == "cuda":
            return dict(options, num_gpus=1, num_cpus=1)
        return dict(options, num_cpus=self._cpus(config))

    def run(self, config: DatasetConfig, identities: torch.Tensor, store: DatasetStore, todo: list[Batch],
            progress: ProgressBar) -> RunStats:
        ray = _import_ray()
        shards = min(self.workers(config), len(todo))
        task = ray.remote(_make_batches).options(**self.task_options(config))
        worker_config = _for_workers(config)
        pending = [task.remote(worker_config, identities.shape[0], store.batches, shard_batches(todo, i, shards))
                   for i in range(shards)]
        refs = list(pending)
        per_batch = {b.index: len(b.identities) * config.images_per_id for b in todo}
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
            progress.set(sum(n for index, n in per_batch.items() if store.part_path(index).is_file()))
        try:
            results = ray.get(refs)
        except ray.exceptions.RayTaskError as exc:   # a worker's own message (a full disk...), not its traceback
            if isinstance(getattr(exc, "cause", None), Arc2FaceError):
                raise exc.cause from None
            raise
        stats = RunStats()
        for result in results:
            stats = stats.merge(result)
        return stats

    def close(self) -> None:
        if self.started:
            _import_ray().shutdown()


def _for_workers(config: DatasetConfig) -> DatasetConfig:
    import dataclasses

    return dataclasses.replace(config, quiet=True, out=Path(config.out).resolve(), models=Path(config.models).resolve(),
                               vae=Path(config.vae).resolve())
