"""The dataset report: ``report.md`` and its PNGs beside the dataset, written at the end of a run and on demand
(``python -m arc2face_core report DIR``).

Everything in it is read from the folder: the settings (``dataset.json``), the manifest (``manifest.jsonl``, or the
finished batches' records of a dataset still being made), the identities and how they were sampled
(``identities.safetensors`` and its metadata), the runs' speed (``runs.jsonl``) and the RecordIO pack (``pack.json``).
The files sit at the top of the folder (``report.md``, ``report_*.png``), where a trainer reading one folder per
identity does not take them for a class. No clock time is written, so the same folder gives the same report.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import InvalidInputError
from .plan import make_batches
from .plots import Histogram, contact_sheet, histograms, value_range
from .runs import read_runs
from .store import IDENTITIES_FILE, MANIFEST_FILE, SETTINGS_FILE, DatasetStore, write_atomic

REPORT_FILE = "report.md"
SIMILARITY_PNG, IDENTITIES_PNG, SPREAD_PNG, SHEET_PNG = ("report_similarity.png", "report_identities.png",
                                                         "report_spread.png", "report_contact_sheet.png")
PAIR_SAMPLE = 2000          # identities whose pairwise cosines are plotted (all of them below this)
SHEET_IDENTITIES, SHEET_IMAGES = 8, 8
NO_FACE = -1.0

LICENCES = """The images were made with these models, whose licences the dataset inherits; read them before you use or
share it:

* **Arc2Face** (the UNet, the ID encoder and `arcface.onnx`, from FoivosPar/Arc2Face): MIT, as its repository states.
* **Stable Diffusion 1.5** (the VAE; the Arc2Face UNet is fine-tuned from SD1.5): CreativeML OpenRAIL-M, whose use
  restrictions (its Attachment A) bind the model and its derivatives.
* **insightface's models** (the antelopev2 face detector, which found and aligned every face scored or cropped here):
  **non-commercial research purposes only**.
"""


@dataclass(frozen=True)
class DatasetFacts:
    folder: Path
    settings: dict
    rows: list[dict]
    finished: bool
    batches: tuple[int, int]        # done, all
    identities: np.ndarray          # [N, 512]
    sampling: dict                  # identities.safetensors' "source" metadata
    runs: list[dict]
    pack: Optional[dict]


def gather(folder: Path) -> DatasetFacts:
    from ..identity.files import load_embeddings

    folder = Path(folder)
    try:
        settings = json.loads((folder / SETTINGS_FILE).read_text())["settings"]
        count, per_id, per_batch = (int(settings[k]) for k in ("identities", "images_per_id", "ids_per_batch"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"{folder} is not a dataset folder: no readable {SETTINGS_FILE} with the dataset's "
                                f"settings ({type(exc).__name__}: {exc})") from exc
    if not (folder / IDENTITIES_FILE).is_file():
        raise InvalidInputError(f"{folder} has no {IDENTITIES_FILE} yet: no report before the identities are made")
    embeds, sampling = load_embeddings(folder / IDENTITIES_FILE)
    store = DatasetStore(folder, count, per_id, len(make_batches(count, per_batch)), ids_per_batch=per_batch)
    rows = store.read_rows()
    pack = None
    if (folder / "pack.json").is_file():
        try:
            pack = json.loads((folder / "pack.json").read_text())
        except ValueError:
            pack = None
    return DatasetFacts(folder, settings, rows, store.complete(), (store.done_batches(), store.batches),
                        embeds.numpy(), sampling, read_runs(folder), pack)


def _faces(rows: list[dict]) -> list[dict]:
    """Kept rows with an identity score (not dropped, a face found, the check not skipped)."""
    return [r for r in rows if not r["dropped"] and r["similarity"] is not None and r["similarity"] != NO_FACE]


def counts(facts: DatasetFacts) -> list[tuple[str, object]]:
    rows, settings = facts.rows, facts.settings
    kept = [r for r in rows if not r["dropped"]]
    exclude = facts.sampling.get("exclude")
    rejected = facts.sampling.get("rejected", "n/a")        # every refused proposal, the excluded ones too
    if exclude and isinstance(rejected, int) and isinstance(exclude.get("refused"), int):
        rejected -= exclude["refused"]
    return [
        ("identities", settings["identities"]),
        ("identities with a kept image", len({r["identity"] for r in kept})),
        ("images asked for", settings["identities"] * settings["images_per_id"]),
        ("images kept", len(kept)),
        ("images generated (every try)", sum(len(r["tries"]) for r in rows)),
        ("images redrawn (more than one try)", sum(1 for r in rows if r["attempt"] > 0)),
        ("images dropped", len(rows) - len(kept)),
        ("kept images without a face", sum(1 for r in kept if r["similarity"] == NO_FACE)),
        ("candidate identities refused: too close to another", rejected),
        ("candidate identities refused: too close to an excluded person",
         exclude.get("refused", "n/a") if exclude else "n/a (no --exclude-identities)"),
    ]


def similarity_stats(values: np.ndarray) -> list[tuple[str, object]]:
    if values.size == 0:
        return [("images", 0)]
    return [("images", int(values.size)), ("mean", values.mean()), ("std", values.std()), ("min", values.min()),
            ("5th percentile", np.percentile(values, 5)), ("median", np.median(values)),
            ("95th percentile", np.percentile(values, 95)), ("max", values.max())]


def identity_spread(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Per identity with at least two scored images: the mean and the standard deviation of their scores."""
    scores: dict[int, list[float]] = {}
    for row in _faces(rows):
        scores.setdefault(row["identity"], []).append(row["similarity"])
    pairs = [(np.mean(v), np.std(v)) for _, v in sorted(scores.items()) if len(v) >= 2]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    means, stds = zip(*pairs)
    return np.array(means), np.array(stds)


def pairwise_sample(identities: np.ndarray) -> tuple[np.ndarray, int]:
    """The cosines between every two of at most ``PAIR_SAMPLE`` identities (a seeded choice beyond that)."""
    chosen = identities
    if identities.shape[0] > PAIR_SAMPLE:
        picks = np.sort(np.random.default_rng(0).choice(identities.shape[0], PAIR_SAMPLE, replace=False))
        chosen = identities[picks]
    gram = chosen.astype(np.float64) @ chosen.T.astype(np.float64)
    return gram[np.triu_indices(chosen.shape[0], k=1)], chosen.shape[0]


def _table(pairs: list[tuple[str, object]], header: tuple[str, str] = ("", "")) -> str:
    def cell(value: object) -> str:
        if isinstance(value, (float, np.floating)):
            return f"{float(value):.4f}"
        return str(value)

    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {name} | {cell(value)} |" for name, value in pairs]
    return "\n".join(lines)


def _speed(runs: list[dict]) -> str:
    if not runs:
        return "No run of this folder recorded its speed (runs.jsonl is written by runs that make batches)."
    lines = ["| run | host | device | dtype | batches | images generated | seconds | images/s |",
             "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        rate = run.get("images_per_second")
        lines.append(f"| {run.get('run')} | {run.get('host')} | {run.get('device')} | {run.get('dtype')} | "
                     f"{run.get('batches')} | {run.get('images_generated')} | {run.get('seconds')} | "
                     f"{'n/a' if rate is None else f'{rate:.4f}'} |")
    made = sum(run.get("images_generated", 0) for run in runs)
    seconds = sum(run.get("seconds", 0.0) for run in runs)
    if seconds > 0:
        lines.append(f"\nAll runs: {made} images generated in {seconds:.1f} s of run time, "
                     f"{made / seconds:.4f} images/s per run (runs side by side add up).")
    return "\n".join(lines)


def _sheet(facts: DatasetFacts):
    from PIL import Image

    by_identity: dict[int, list[dict]] = {}
    for row in facts.rows:
        by_identity.setdefault(row["identity"], []).append(row)
    rows = []
    for identity in sorted(by_identity)[:SHEET_IDENTITIES]:
        members = sorted(by_identity[identity], key=lambda r: r["image"])[:SHEET_IMAGES]
        tiles = []
        for row in members:
            name = None if row["dropped"] else (row.get("crop") or row.get("file"))
            path = facts.folder / name if name else None
            tiles.append(Image.open(path).convert("RGB") if path is not None and path.is_file() else None)
        scores = [r["similarity"] for r in _faces(members)]
        lines = [f"identity {identity}", f"kept {sum(t is not None for t in tiles)} of {len(members)} shown"]
        if scores:
            lines.append(f"mean similarity {np.mean(scores):.3f}")
        rows.append((lines, tiles))
    return contact_sheet(rows)


def _plots(facts: DatasetFacts, scores: np.ndarray, pairs: np.ndarray, spread: tuple[np.ndarray, np.ndarray]
           ) -> dict[str, object]:
    settings = facts.settings
    marks = ((settings["min_similarity"], "--min-similarity"),) if settings.get("min_similarity") is not None else ()
    threshold = (settings.get("identity") or {}).get("threshold")
    low, high = value_range(scores)
    means, stds = spread
    return {
        SIMILARITY_PNG: histograms([Histogram("Each kept image's ArcFace cosine to its identity", scores, low, high,
                                              xlabel="cosine similarity", marks=marks)]),
        IDENTITIES_PNG: histograms([Histogram("Cosine between two identities", pairs, *value_range(pairs),
                                              xlabel="cosine similarity",
                                              marks=((threshold, "uniqueness threshold"),) if threshold else ())]),
        SPREAD_PNG: histograms([
            Histogram("Per identity: mean cosine of its images", means, *value_range(means), xlabel="mean"),
            Histogram("Per identity: spread (std) of its images", stds, *value_range(stds, 0.01, 0.0, 1.0, 0.05),
                      xlabel="standard deviation")]),
        SHEET_PNG: _sheet(facts),
    }


def render(facts: DatasetFacts) -> tuple[str, dict[str, object]]:
    """report.md's text and its pictures by file name."""
    scores = np.array([r["similarity"] for r in _faces(facts.rows)], dtype=np.float64)
    pairs, sampled = pairwise_sample(facts.identities)
    spread = identity_spread(facts.rows)
    settings, sampling = facts.settings, facts.sampling
    state = ("finished" if facts.finished else
             f"**unfinished**: {facts.batches[0]} of {facts.batches[1]} batches done; the figures cover those")
    lines = [f"# Dataset report: {facts.folder.name}", "", f"State: {state}.", "", "## Counts", "",
             _table(counts(facts), ("what", "count")), "", "## Identity check", "",
             "ArcFace cosine of each kept image to its identity (images with a face; -1 marks none found).", "",
             _table(similarity_stats(scores), ("statistic", "value")), "", f"![similarity]({SIMILARITY_PNG})", "",
             "## Identities", ""]
    identity_facts = [("sampler", sampling.get("sampler", "n/a")),
                      ("largest cosine between two identities", sampling.get("max_similarity", "n/a")),
                      (f"largest cosine in the plot's {sampled} identities", pairs.max() if pairs.size else "n/a")]
    exclude = sampling.get("exclude")
    if exclude:
        identity_facts += [("excluded people (embeddings)", exclude.get("count")),
                           ("exclusion threshold", exclude.get("threshold")),
                           ("largest cosine to an excluded person", exclude.get("max_similarity"))]
    lines += [_table(identity_facts, ("what", "value")), "", f"![identities]({IDENTITIES_PNG})", "",
              "## Per-identity spread", ""]
    means, stds = spread
    spread_facts = [("identities with two or more scored images", int(means.size))]
    if means.size:
        spread_facts += [("median of the per-identity std", float(np.median(stds))),
                         ("largest per-identity std", float(stds.max())),
                         ("lowest per-identity mean", float(means.min()))]
    lines += [_table(spread_facts, ("what", "value")), "", f"![spread]({SPREAD_PNG})", "", "## Contact sheet", "",
              f"The first {SHEET_IDENTITIES} identities, up to {SHEET_IMAGES} images each (crossed out: dropped).",
              "", f"![contact sheet]({SHEET_PNG})", "", "## Speed", "", _speed(facts.runs), ""]
    if facts.pack:
        pack = facts.pack
        lines += ["## RecordIO", "", _table([("layout", pack.get("layout")), ("images", pack.get("images")),
                                             ("classes", pack.get("classes")), ("packed", pack.get("source")),
                                             ("image size", pack.get("image_size"))], ("train.rec", "")), ""]
    lines += ["## Settings", "", "```json", json.dumps(settings, indent=2), "```", "", "## Licences", "", LICENCES]
    return "\n".join(lines), _plots(facts, scores, pairs, spread)


def write_report(folder: Path, quiet: bool = False) -> Path:
    """Write ``report.md`` and its PNGs into ``folder``; returns the report's path."""
    import io

    facts = gather(Path(folder))
    text, pictures = render(facts)
    for name, picture in pictures.items():
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        write_atomic(facts.folder / name, buffer.getvalue())
    path = facts.folder / REPORT_FILE
    write_atomic(path, text.encode())
    if not quiet:
        print(f"report: {path}", file=sys.stderr, flush=True)
    return path


def needs_report(folder: Path, made_batches: bool) -> bool:
    """At the end of a run: when it made batches, or the finished dataset has no report yet."""
    folder = Path(folder)
    return made_batches or ((folder / MANIFEST_FILE).is_file() and not (folder / REPORT_FILE).is_file())
