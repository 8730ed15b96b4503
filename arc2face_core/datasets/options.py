"""The ``dataset`` subcommand's own options, and its settings made from the parsed command line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import torch

from .command import RunOptions
from .config import CROPS, DEFAULT_MAX_ATTEMPTS, DatasetConfig
from .plan import parse_shard
from .sampling import DEFAULT_JITTER_FLOOR, UNIQUE_THRESHOLD


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    who = parser.add_argument_group("identities")
    who.add_argument("--identities", type=int, metavar="N", help="how many synthetic identities (required unless "
                                                                 "--embeddings gives them)")
    who.add_argument("--identity-seed", type=int, default=None, help="seed of the identities (default: --seed)")
    who.add_argument("--identity-threshold", type=float, default=UNIQUE_THRESHOLD, metavar="T",
                     help="keep a sampled identity only if its ArcFace cosine to every kept one is below T (paper)")
    who.add_argument("--pca", type=Path, metavar="SOURCE",
                     help="sample identities from a PCA of real faces (the paper's sampler): a folder of photos, an "
                          "embeddings file, or a saved identity_pca.safetensors; default: random unit vectors")
    who.add_argument("--pca-components", type=int, default=None, metavar="C",
                     help="PCA components when fitting (default and most: samples - 1, up to 512; paper: 300-400)")
    who.add_argument("--embeddings", type=Path, metavar="FILE",
                     help="use these identities as they are (identities.safetensors, Save Embeddings, embeddings.pt)")
    who.add_argument("--id-jitter", type=float, default=0.0, metavar="J",
                     help="each image gets its own vector near its identity, normalize(identity + J*g), g ~ N(0, I/512) "
                          "(the pack's addition for more within-identity variation; 0: off)")
    who.add_argument("--id-jitter-floor", type=float, default=DEFAULT_JITTER_FLOOR, metavar="F",
                     help="lowest cosine of an image's vector to its identity under --id-jitter")
    check = parser.add_argument_group("identity check (ArcFace cosine of each image to its identity, in the manifest)")
    check.add_argument("--min-similarity", type=float, default=None, metavar="S",
                       help="redraw an image scoring below S with its next attempt's seed; drop it after "
                            "--max-attempts tries (it stays in the manifest as dropped, with its scores)")
    check.add_argument("--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS, metavar="A",
                       help="tries per image under --min-similarity or --crop, the first included")
    check.add_argument("--no-similarity", action="store_true", help="skip the identity check (no face models needed)")
    crops = parser.add_argument_group("training crops")
    crops.add_argument("--crop", choices=CROPS, default=None,
                       help="arcface: also write each image's aligned 112x112 face (the crop the identity check "
                            "gives ArcFace) to arcface112/<identity>/<image>.png; an image without a face is redrawn "
                            "like one below --min-similarity, then dropped")
    crops.add_argument("--keep-full", action=argparse.BooleanOptionalAction, default=True,
                       help="with --crop: keep the full images too (--no-keep-full: the crops only)")
    run = parser.add_argument_group("running on several machines")
    run.add_argument("--shard", default="0/1", metavar="I/N",
                     help="make only the I-th of N parts (I from 0; whole batches), e.g. a Slurm array task")
    run.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                     help="run the batches as Ray tasks: one per GPU of the cluster (else per --cpu-threads CPUs); "
                          "ADDRESS of a running cluster ('auto': this machine's), or none for a local one")
    run.add_argument("--cpu-threads", type=int, default=None, metavar="T",
                     help="torch threads of every run on the CPU (and CPUs per Ray worker), recorded in dataset.json: "
                          "bit-identical files need one thread count (default: the dataset's, else torch's)")
    run.add_argument("--prepare-only", action="store_true",
                     help="write dataset.json and identities.safetensors, make no images (before a Slurm array)")


def dataset_config(args: argparse.Namespace, hint: Optional[torch.Tensor], pose: dict) -> DatasetConfig:
    vae = args.vae if args.vae is not None else args.models / "vae" / "sd15_vae.safetensors"
    return DatasetConfig(
        out=args.out, models=args.models, vae=vae, identities=args.identities, images_per_id=args.images_per_id,
        seed=args.seed, identity_seed=args.identity_seed, ids_per_batch=args.ids_per_batch, steps=args.steps,
        guidance=args.cfg, width=args.width, height=args.height, identity_threshold=args.identity_threshold,
        pca=args.pca, pca_components=args.pca_components, embeddings=args.embeddings, jitter=args.id_jitter,
        jitter_floor=args.id_jitter_floor, min_similarity=args.min_similarity, max_attempts=args.max_attempts,
        score=not args.no_similarity, crop=args.crop, keep_full=args.keep_full, scheduler=args.scheduler,
        lora=args.lora, lora_strength=args.lora_strength, device=args.device, dtype=args.dtype, provider=args.provider,
        channels_last=args.channels_last, compile=args.compile, cpu_threads=args.cpu_threads, download=args.download,
        hint=hint, pose=pose, quiet=args.quiet)


def run_options(args: argparse.Namespace) -> RunOptions:
    return RunOptions(shard=parse_shard(args.shard), ray=args.ray is not None, ray_address=args.ray or None,
                      prepare_only=args.prepare_only)
