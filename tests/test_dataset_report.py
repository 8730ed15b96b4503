"""The dataset report (arc2face_core.datasets.report, .plots) and ``python -m arc2face_core report``.

Independent routes: every number of report.md is recomputed here from manifest.jsonl with numpy (counts, the
similarity statistics, the per-identity spread) or read from the file it comes from (identities.safetensors'
metadata, runs.jsonl); the histogram bars are measured in the PNG's pixels against ``numpy.histogram``; the contact
sheet's tiles against the images they show. The folder is written here in the dataset layout, with every kind of row:
kept at the first try, redrawn, dropped, kept without a face, an identity with all its images dropped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_dataset_recordio import astronaut_crop

from arc2face_core.cli.main import main as cli_main
from arc2face_core.datasets.plots import BAR, LABEL_WIDTH, PANEL, TILE, Histogram, histograms, plot_box
from arc2face_core.datasets.sampling import unique_identities
from arc2face_core.identity.files import save_embeddings

IDENTITIES, PER_ID = 6, 4


def tables(text: str) -> dict[str, str]:
    """Every two-column table row of report.md: first cell -> second cell."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| ([^|]+?) \| ([^|]*?) \|$", text, re.MULTILINE)}


def rows_for(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(IDENTITIES):
        for j in range(PER_ID):
            tries = [float(s) for s in rng.uniform(0.1, 0.8, size=1 + (i * PER_ID + j) % 3)]
            dropped = i == 4 or (i, j) == (1, 3)               # identity 4: every image dropped
            if (i, j) == (2, 1):
                tries = [-1.0]                                  # kept without a face
            rows.append({"identity": i, "image": j, "file": None if dropped else f"{i:05d}/{j:03d}.png",
                         "seed": 17 * i + j, "attempt": len(tries) - 1, "similarity": tries[-1], "dropped": dropped,
                         "tries": tries, "batch": i // 2})
    return rows


def write_folder(folder: Path, rows: list[dict], finished: bool = True) -> None:
    settings = {"identities": IDENTITIES, "images_per_id": PER_ID, "ids_per_batch": 2, "seed": 3,
                "identity": {"threshold": 0.3, "sampler": "unique random unit vectors"}, "min_similarity": 0.4}
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"format": "arc2face.dataset", "settings": settings}))
    save_embeddings(folder / "identities.safetensors", unique_identities(IDENTITIES, seed=3).embeds,
                    {"sampler": "unique random unit vectors", "rejected": 7, "max_similarity": 0.1234,
                     "exclude": {"count": 40, "threshold": 0.3, "refused": 5, "max_similarity": 0.2876,
                                 "sources": [{"file": "lfw.safetensors", "embeddings": 40}]}})
    for row in rows:
        if row["file"]:
            (folder / row["file"]).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(astronaut_crop(row["identity"] % 4, row["image"], 64)).save(folder / row["file"])
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if finished:
        (folder / "manifest.jsonl").write_text(text)
    else:
        (folder / ".parts").mkdir()
        first = [r for r in rows if r["batch"] == 0]
        (folder / ".parts" / "000000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in first))
    runs = [{"run": "shard 0/2", "host": "a", "device": "cpu", "dtype": "fp32", "batches": 2, "images_generated": 30,
             "seconds": 12.0, "images_per_second": 2.5},
            {"run": "shard 1/2", "host": "b", "device": "cpu", "dtype": "fp32", "batches": 1, "images_generated": 18,
             "seconds": 6.0, "images_per_second": 3.0}]
    (folder / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs) + "{half a li")


def close(text: str, value: float) -> bool:
    return abs(float(text) - value) <= 5e-5


def test_report_numbers_equal_the_manifest(tmp_path):
    folder = tmp_path / "faces"
    write_folder(folder, rows_for())
    assert cli_main(["report", str(folder), "-q"]) == 0
    text = (folder / "report.md").read_text()
    cells = tables(text)
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    kept = [r for r in rows if not r["dropped"]]
    assert "State: finished." in text
    assert int(cells["identities"]) == 6
    assert int(cells["identities with a kept image"]) == len({r["identity"] for r in kept}) == 5
    assert int(cells["images asked for"]) == 24
    assert int(cells["images kept"]) == len(kept)
    assert int(cells["images generated (every try)"]) == sum(len(r["tries"]) for r in rows)
    assert int(cells["images redrawn (more than one try)"]) == sum(r["attempt"] > 0 for r in rows)
    assert int(cells["images dropped"]) == len(rows) - len(kept)
    assert int(cells["kept images without a face"]) == 1
    assert cells["candidate identities refused: too close to another"] == "2"     # 7 refused, 5 of them excluded
    assert cells["candidate identities refused: too close to an excluded person"] == "5"
    scores = np.array([r["similarity"] for r in kept if r["similarity"] != -1.0])
    assert int(cells["images"]) == scores.size
    for name, value in (("mean", scores.mean()), ("std", scores.std()), ("min", scores.min()),
                        ("5th percentile", np.percentile(scores, 5)), ("median", np.median(scores)),
                        ("95th percentile", np.percentile(scores, 95)), ("max", scores.max())):
        assert close(cells[name], value), name
    per = {}
    for r in kept:
        if r["similarity"] != -1.0:
            per.setdefault(r["identity"], []).append(r["similarity"])
    stds = np.array([np.std(v) for _, v in sorted(per.items()) if len(v) >= 2])
    means = np.array([np.mean(v) for _, v in sorted(per.items()) if len(v) >= 2])
    assert int(cells["identities with two or more scored images"]) == stds.size
    assert close(cells["median of the per-identity std"], np.median(stds))
    assert close(cells["largest per-identity std"], stds.max())
    assert close(cells["lowest per-identity mean"], means.min())
    assert cells["largest cosine between two identities"] == "0.1234"
    assert cells["largest cosine to an excluded person"] == "0.2876" and cells["excluded people (embeddings)"] == "40"
    assert "| shard 1/2 | b | cpu | fp32 | 1 | 18 | 6.0 | 3.0000 |" in text
    assert "All runs: 48 images generated in 18.0 s of run time, 2.6667 images/s per run" in text
    assert '"min_similarity": 0.4' in text                               # the settings
    for licence in ("MIT", "CreativeML OpenRAIL-M", "non-commercial research purposes only"):
        assert licence in text
    for name in ("report_similarity.png", "report_identities.png", "report_spread.png", "report_contact_sheet.png"):
        assert f"]({name})" in text and Image.open(folder / name).format == "PNG"
    assert Image.open(folder / "report_spread.png").size == (2 * PANEL[0], PANEL[1])


def test_the_contact_sheet_shows_the_images_and_crosses_out_the_dropped(tmp_path):
    folder = tmp_path / "faces"
    rows = rows_for()
    write_folder(folder, rows)
    assert cli_main(["report", str(folder), "-q"]) == 0
    sheet = np.asarray(Image.open(folder / "report_contact_sheet.png").convert("RGB")).astype(int)
    assert sheet.shape == (IDENTITIES * (TILE + 4), LABEL_WIDTH + PER_ID * (TILE + 4), 3)
    for row in rows:
        y, x = row["identity"] * (TILE + 4) + 2, LABEL_WIDTH + row["image"] * (TILE + 4)
        tile = sheet[y:y + TILE, x:x + TILE]
        if row["dropped"]:
            centre = tile[TILE // 2, TILE // 2]
            assert tuple(tile[TILE // 2, 10]) == (200, 200, 200) and centre[0] > centre[1] + 100   # grey, red X
        else:
            shown = np.asarray(Image.open(folder / row["file"]).convert("RGB").resize((TILE, TILE))).astype(int)
            assert np.abs(tile - shown).mean() < 6


def test_histogram_bars_are_the_counts():
    values = np.random.default_rng(5).normal(0.5, 0.1, 3000)
    low, high, bins = 0.0, 1.0, 40
    image = np.asarray(histograms([Histogram("t", np.zeros(3), -1, 1), Histogram("t", values, low, high, bins)]))
    left, top, right, bottom = plot_box(1)
    counts, _ = np.histogram(values, bins=bins, range=(low, high))
    height = bottom - top
    for b, count in enumerate(counts):
        column = left + ((b * (right - left)) // bins + ((b + 1) * (right - left)) // bins) // 2 - 1
        bar = int(np.all(image[top:bottom, column] == BAR, axis=1).sum())
        assert abs(bar - count / counts.max() * height) <= 1, (b, bar, count)


def test_an_unfinished_dataset_is_reported_from_its_finished_batches(tmp_path):
    folder = tmp_path / "faces"
    rows = rows_for()
    write_folder(folder, rows, finished=False)
    assert cli_main(["report", str(folder), "-q"]) == 0
    text = (folder / "report.md").read_text()
    assert "**unfinished**: 1 of 3 batches done" in text
    first = [r for r in rows if r["batch"] == 0]
    assert int(tables(text)["images kept"]) == sum(not r["dropped"] for r in first)


@pytest.mark.parametrize("what, message", [("empty", "not a dataset folder"), ("no identities", "no report before"),
                                           ("old settings", "KeyError: 'images_per_id'")])
def test_report_refusals(tmp_path, capsys, what, message):
    folder = tmp_path / "faces"
    folder.mkdir()
    if what == "no identities":
        (folder / "dataset.json").write_text(json.dumps({"settings": {"identities": 2, "images_per_id": 1,
                                                                      "ids_per_batch": 1}}))
    if what == "old settings":
        (folder / "dataset.json").write_text(json.dumps({"settings": {"identities": 2}}))
    assert cli_main(["report", str(folder)]) == 2
    assert message in capsys.readouterr().err


def test_identities_plot_covers_every_pair_of_a_small_dataset(tmp_path):
    from arc2face_core.datasets.report import pairwise_sample

    embeds = unique_identities(30, seed=2).embeds.numpy()
    pairs, count = pairwise_sample(embeds)
    gram = embeds.astype(np.float64) @ embeds.T.astype(np.float64)
    assert count == 30 and pairs.size == 30 * 29 // 2
    np.testing.assert_allclose(np.sort(pairs), np.sort(gram[np.triu_indices(30, 1)]))
    assert torch.is_tensor(torch.from_numpy(pairs))
