"""``pack`` and ``report``: a dataset folder made by ``dataset``, as insightface's RecordIO training set and as a
report (``arc2face_core.datasets.pack`` and ``.report``). Neither loads a model."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_pack_arguments(p: argparse.ArgumentParser) -> None:
    from ..datasets.pack import LAYOUTS

    p.add_argument("folder", type=Path, help="a finished dataset folder (with manifest.jsonl)")
    p.add_argument("--out", type=Path, default=None,
                   help="where train.rec, train.idx, property and pack.json go (default: the dataset folder)")
    p.add_argument("--full-images", action="store_true",
                   help="pack the full images as they are (default: the 112x112 crops of --crop arcface)")
    p.add_argument("--layout", choices=LAYOUTS, default="insightface",
                   help="insightface: header, images by identity, identity ranges (arcface_torch's MXFaceDataset); "
                        "dali: the images alone, shuffled (DALI's MXNet reader; MXFaceDataset reads it too)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", type=Path, help="a dataset folder (finished or not)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing")


def run_pack(args: argparse.Namespace) -> int:
    from ..datasets.pack import pack_dataset

    pack_dataset(args.folder, args.out, layout=args.layout, full_images=args.full_images, quiet=args.quiet)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from ..datasets.report import write_report

    write_report(args.folder, quiet=args.quiet)
    return 0
