"""The ``dataset`` subcommand's own options, and its settings made from the parsed command line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import torch

from ..errors import InvalidInputError
from .command import RunOptions
from .config import CROPS, DEFAULT_MAX_ATTEMPTS, DatasetConfig
from .exclusion import DEFAULT_EXCLUDE_THRESHOLD
from .pack import LAYOUTS
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
    who.add_argument("--exclude-identities", action="append", type=Path, metavar="FILE_OR_FOLDER",
                     help="real people to stay away from (e.g. those of LFW, CFP-FP, AgeDB you will evaluate on): an "
                          "embeddings file or a folder of photos, repeatable; a sampled identity within "
                          "--exclude-threshold of any of them is redrawn")
    who.add_argument("--exclude-threshold", type=float, default=None, metavar="T",
                     help=f"cosine to an excluded person at which a sampled identity is redrawn (default "
                          f"{DEFAULT_EXCLUDE_THRESHOLD}, the paper's rule between identities)")
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
                          "ADDRESS of a running cluster ('auto': this machine's), or none for a new local one "
                          "(RAY_ADDRESS's cluster when that is set)")
    run.add_argument("--cpu-threads", type=int, default=None, metavar="T",
                     help="torch threads of every run on the CPU (and CPUs per Ray worker), recorded in dataset.json: "
                          "bit-identical files need one thread count (default: the dataset's, else torch's)")
    run.add_argument("--verify", action="store_true",
                     help="read back every image of the batches already made (in this run's --shard): missing, cut "
                          "short, not the recorded SHA-256 or the wrong size; a batch with a damaged image is made "
                          "again")
    run.add_argument("--prepare-only", action="store_true",
                     help="write dataset.json and identities.safetensors, make no images (before a Slurm array)")
    output = parser.add_argument_group("what a finished dataset gets")
    output.add_argument("--format", choices=("folder", "rec"), default="folder",
                        help="rec: also pack it as insightface's RecordIO (train.rec, train.idx, property: the "
                             "112x112 crops of --crop arcface), as the pack subcommand does")
    output.add_argument("--pack-full-images", action="store_true",
                        help="with --format rec: pack the full images as they are when there are no crops")
    output.add_argument("--pack-layout", choices=LAYOUTS, default="insightface",
                        help="insightface: header, images by identity, identity ranges (arcface_torch's MXFaceDataset"
                             "); dali: the images alone, shuffled (DALI's MXNet reader; MXFaceDataset reads it too)")
    output.add_argument("--no-report", action="store_true",
                        help="write no report.md (it is written when the dataset is finished; the report "
                             "subcommand writes it any time)")


def dataset_config(args: argparse.Namespace, hint: Optional[torch.Tensor], pose: dict) -> DatasetConfig:
    vae = args.vae if args.vae is not None else args.models / "vae" / "sd15_vae.safetensors"
    return DatasetConfig(
        out=args.out, models=args.models, vae=vae, identities=args.identities, images_per_id=args.images_per_id,
        seed=args.seed, identity_seed=args.identity_seed, ids_per_batch=args.ids_per_batch, steps=args.steps,
        guidance=args.cfg, width=args.width, height=args.height, identity_threshold=args.identity_threshold,
        pca=args.pca, pca_components=args.pca_components, embeddings=args.embeddings, jitter=args.id_jitter,
        jitter_floor=args.id_jitter_floor, exclude=tuple(args.exclude_identities or ()),
        exclude_threshold=_exclude_threshold(args), min_similarity=args.min_similarity, max_attempts=args.max_attempts,
        score=not args.no_similarity, crop=args.crop, keep_full=args.keep_full, scheduler=args.scheduler,
        lora=args.lora, lora_strength=args.lora_strength, device=args.device, dtype=args.dtype, provider=args.provider,
        channels_last=args.channels_last, compile=args.compile, cpu_threads=args.cpu_threads, download=args.download,
        hint=hint, pose=pose, quiet=args.quiet)


def _exclude_threshold(args: argparse.Namespace) -> float:
    if args.exclude_threshold is None:
        return DEFAULT_EXCLUDE_THRESHOLD
    if not args.exclude_identities:
        raise InvalidInputError("--exclude-threshold needs --exclude-identities (the people to stay away from)")
    return args.exclude_threshold


def run_options(args: argparse.Namespace) -> RunOptions:
    if args.format != "rec" and (args.pack_full_images or args.pack_layout != "insightface"):
        raise InvalidInputError("--pack-full-images and --pack-layout go with --format rec")
    return RunOptions(shard=parse_shard(args.shard), ray=args.ray is not None, ray_address=args.ray or None,
                      prepare_only=args.prepare_only, format=args.format, pack_full_images=args.pack_full_images,
                      pack_layout=args.pack_layout, report=not args.no_report, verify=args.verify)
