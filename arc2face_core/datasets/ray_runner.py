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
from pathlib import Path
from typing import Optional

import torch

from ..errors import InvalidInputError
from .config import DatasetConfig
from .plan import Batch, shard_batches
from .progress import ProgressBar, RunStats
from .store import IDENTITIES_FILE, DatasetStore

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
    store = DatasetStore(config.out, identities, config.images_per_id, batch_count)
    embeds, _ = load_embeddings(config.out / IDENTITIES_FILE)
    return load_maker(config, embeds, store).run(batches)


class RaySession:
    """A connection to a Ray cluster (started here, or one the caller already initialised)."""

    def __init__(self, started: bool, gpus: int, cpus: int, node_cpus: int) -> None:
        self.started, self.gpus, self.cpus = started, gpus, cpus
        self.node_cpus = node_cpus      # CPUs of the smallest node: the most one task can be given anywhere

    @staticmethod
    def package() -> Path:
        return Path(__file__).resolve().parents[1]

    @classmethod
    def start(cls, address: Optional[str]) -> "RaySession":
        """Connect to ``address`` (``auto``: the cluster this machine belongs to; None: ``RAY_ADDRESS``, else a
        new local one); an already initialised Ray is used as it is."""
        ray = _import_ray()
        started = not ray.is_initialized()
        if started:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                     runtime_env={"py_modules": [str(cls.package())]})
        resources = ray.cluster_resources()
        nodes = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")] or [resources.get("CPU", 1)]
        return cls(started, int(resources.get("GPU", 0)), int(resources.get("CPU", 1)), max(1, int(min(nodes))))

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
        stats = RunStats()
        for result in ray.get(refs):
            stats = stats.merge(result)
        return stats

    def close(self) -> None:
        if self.started:
            _import_ray().shutdown()


def _for_workers(config: DatasetConfig) -> DatasetConfig:
    import dataclasses

    return dataclasses.replace(config, quiet=True, out=Path(config.out).resolve(), models=Path(config.models).resolve(),
                               vae=Path(config.vae).resolve())
