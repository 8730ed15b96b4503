"""``python -m arc2face_core dataset`` on tiny models: layout, manifest, seeds, regeneration, resume, shards, Ray,
the identity check with redraws and drops, and the identity samplers.

Independent routes: every image is made again outside the dataset code, from its manifest row alone (the identity
from identities.safetensors, the noise ``torch.randn`` after ``torch.manual_seed(seed)`` as ComfyUI's KSampler draws
it, the documented jitter, the pipeline called directly); every similarity is recomputed from the PNG on disk with the
hand-written reference path of test_faces (skimage alignment, onnxruntime, L2 norm). The tiny VAE scales by 2, so
32x32 images have 16x16 latents. CPU datasets record their torch thread count; these runs use one thread, so that Ray
workers (one CPU each) and this process compute alike.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_dataset_sampling import documented_seed, max_pairwise
from test_faces import reference_embedding

from arc2face_core.cli.main import main as cli_main
from arc2face_core.datasets.sampling import jitter_identity, unique_identities
from arc2face_core.datasets.seeds import image_seed
from arc2face_core.identity.files import load_embeddings
from fixtures_faces import write_face_models
from fixtures_models import link_or_copy

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
SIZE, STEPS = 32, 2


@pytest.fixture(scope="module")
def models(tmp_path_factory, astronaut_scene, tiny_controlnet_root):
    """A ComfyUI-style models folder: the tiny Arc2Face models (those of ``tiny_pipeline`` and
    ``tiny_control_pipeline``) and the rigged face models, whose detector finds the astronaut's face box, scaled, in
    any square image with contrast there."""
    base = tmp_path_factory.mktemp("dataset_models") / "models"
    write_face_models(base, astronaut_scene)
    for part in ("encoder", "arc2face", "controlnet"):
        link_or_copy(tiny_controlnet_root / part, base / "arc2face" / part)
    return base


def command(models: Path, vae: Path, out: Path, *extra: str) -> list[str]:
    return ["dataset", "--models", str(models), "--vae", str(vae), "--out", str(out), "--steps", str(STEPS),
            "--width", str(SIZE), "--height", str(SIZE), "--images-per-id", "2", "--device", "cpu",
            "--cpu-threads", "1", "-q", *extra]


def run(models, vae, out, *extra) -> int:
    code = cli_main(command(models, vae, out, *extra))
    torch.set_num_threads(THREADS)      # the run set this process to the dataset's one thread
    return code


THREADS = torch.get_num_threads()


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def files_of(out: Path) -> dict[str, bytes]:
    """Every file of a dataset folder by relative path: the bytes (identities.safetensors too), except dataset.json
    without its creation time; without the run log and report.md, which hold each run's timing (the report's
    pictures are compared)."""
    found = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.name not in ("runs.jsonl", "report.md"):
            data = path.read_bytes()
            if path.name == "dataset.json":
                record = json.loads(data)
                record.pop("created")
                data = json.dumps(record).encode()
            found[path.relative_to(out).as_posix()] = data
    return found


def regenerate(pipeline, rows: list[dict], identities: torch.Tensor, jitter=(0.0, 0.0), seed: int = 0) -> np.ndarray:
    """The images of ``rows`` made again from the rows alone (see the module docstring)."""
    noise, targets = [], []
    for row in rows:
        generator = torch.manual_seed(row["seed"])
        noise.append(torch.randn([1, 4, SIZE // 2, SIZE // 2], generator=generator))
        identity = identities[row["identity"]]
        if jitter[0]:
            jitter_seed = documented_seed(seed, row["identity"], row["image"], row["attempt"], "jitter")
            identity = jitter_identity(identity, jitter[0], jitter[1], jitter_seed)
        targets.append(identity)
    torch.set_num_threads(1)
    try:
        return pipeline.generate(torch.stack(targets), 1, STEPS, 3.0, SIZE, SIZE, noise=torch.cat(noise))
    finally:
        torch.set_num_threads(THREADS)


# ------------------------------------------------------------------------------------------- one complete dataset


@pytest.fixture(scope="module")
def reference(models, tiny_vae_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "faces"
    assert run(models, tiny_vae_folder, out, "--identities", "5", "--ids-per-batch", "2", "--seed", "7") == 0
    return out


def test_layout_and_manifest(reference):
    names = sorted(p.relative_to(reference).as_posix() for p in reference.glob("*/*.png"))
    assert names == [f"{i:05d}/{j:03d}.png" for i in range(5) for j in range(2)]
    assert sorted(p.name for p in reference.iterdir()) == [
        "00000", "00001", "00002", "00003", "00004", "dataset.json", "identities.safetensors", "manifest.jsonl",
        "report.md", "report_contact_sheet.png", "report_identities.png", "report_similarity.png",
        "report_spread.png", "runs.jsonl"]
    rows = manifest(reference)
    assert [(r["identity"], r["image"]) for r in rows] == [(i, j) for i in range(5) for j in range(2)]
    assert [r["batch"] for r in rows] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]       # 2 identities x 2 images per batch
    for row in rows:
        assert row["file"] == f"{row['identity']:05d}/{row['image']:03d}.png"
        assert row["seed"] == documented_seed(7, row["identity"], row["image"], 0)
        assert row["attempt"] == 0 and row["dropped"] is False and row["tries"] == [row["similarity"]]
        assert row["sha256"] == hashlib.sha256((reference / row["file"]).read_bytes()).hexdigest()   # --verify's
    settings = json.loads((reference / "dataset.json").read_text())["settings"]
    assert settings["identities"] == 5 and settings["seed"] == 7 and settings["cpu_threads"] == 1
    identities, source = load_embeddings(reference / "identities.safetensors")
    assert torch.equal(identities, unique_identities(5, seed=7).embeds) and max_pairwise(identities) < 0.3
    assert source["sampler"] == "unique random unit vectors" and source["threshold"] == 0.3


def test_similarities_equal_the_reference_computation(reference, models, astronaut_scene):
    identities, _ = load_embeddings(reference / "identities.safetensors")
    kps = astronaut_scene.faces[0].kps_array() * SIZE / astronaut_scene.image.shape[0]   # the rigged box, scaled
    for row in manifest(reference):
        embedding, _ = reference_embedding(pixels(reference / row["file"]), kps, models / "arc2face" / "arcface.onnx")
        assert abs(row["similarity"] - float(torch.from_numpy(embedding) @ identities[row["identity"]])) < 1e-4


def test_each_manifest_row_regenerates_its_file(reference, tiny_pipeline):
    identities, _ = load_embeddings(reference / "identities.safetensors")
    rows = manifest(reference)
    for batch in sorted({r["batch"] for r in rows}):
        members = [r for r in rows if r["batch"] == batch]
        for row, image in zip(members, regenerate(tiny_pipeline, members, identities)):
            assert np.array_equal(image, pixels(reference / row["file"])), row        # its batch again: bit for bit
    for row in rows[:3]:                                                              # alone: within one level
        alone = regenerate(tiny_pipeline, [row], identities)[0]
        assert np.abs(alone.astype(int) - pixels(reference / row["file"]).astype(int)).max() <= 1
    assert np.abs(pixels(reference / rows[0]["file"]).astype(int) - pixels(reference / rows[1]["file"])).mean() > 1


def test_the_finished_run_writes_its_report_and_its_speed(reference):
    from test_dataset_report import tables

    text = (reference / "report.md").read_text()
    cells, rows = tables(text), manifest(reference)
    scores = np.array([r["similarity"] for r in rows])
    assert int(cells["images kept"]) == len(rows) == 10 and int(cells["images dropped"]) == 0
    assert int(cells["images generated (every try)"]) == sum(len(r["tries"]) for r in rows)
    for name, value in (("mean", scores.mean()), ("std", scores.std()), ("min", scores.min()), ("max", scores.max())):
        assert abs(float(cells[name]) - value) <= 5e-5, name
    (line,) = [json.loads(text) for text in (reference / "runs.jsonl").read_text().splitlines()]
    assert (line["run"], line["batches"], line["images_generated"], line["device"]) == ("dataset", 3, 10, "cpu")
    assert line["seconds"] > 0 and abs(line["images_per_second"] - 10 / line["seconds"]) < 1e-3
    assert f"| dataset | {line['host']} | cpu | fp32 | 3 | 10 | {line['seconds']} |" in text


def test_a_finished_dataset_is_left_alone_and_other_settings_are_refused(reference, models, tiny_vae_folder, capsys):
    before = {p: p.stat().st_mtime_ns for p in reference.rglob("*") if p.is_file()}
    args = ("--identities", "5", "--ids-per-batch", "2", "--seed", "7")
    assert run(models, tiny_vae_folder, reference, *args) == 0
    assert {p: p.stat().st_mtime_ns for p in reference.rglob("*") if p.is_file()} == before
    assert run(models, tiny_vae_folder, reference, "--identities", "5", "--ids-per-batch", "3", "--seed", "7") == 2
    error = capsys.readouterr().err
    assert "holds a dataset made with other settings" in error and "ids_per_batch: 2 -> 3" in error


# ------------------------------------------------------------------------------- restarts, shards and Ray: one recipe

RECIPE = ("--identities", "6", "--ids-per-batch", "1", "--seed", "3", "--id-jitter", "0.5", "--id-jitter-floor", "0.8")


@pytest.fixture(scope="module")
def whole(models, tiny_vae_folder, tmp_path_factory):
    """The recipe made in one uninterrupted run: what every other way of making it must equal, file for file."""
    out = tmp_path_factory.mktemp("whole") / "faces"
    assert run(models, tiny_vae_folder, out, *RECIPE) == 0
    return out


def test_jittered_images_regenerate_from_their_rows(whole, tiny_pipeline):
    identities, _ = load_embeddings(whole / "identities.safetensors")
    rows = manifest(whole)
    assert all(0.8 - 1e-6 <= row["jitter_similarity"] < 1.0 for row in rows)
    first_batch = rows[:2]                                             # one identity x 2 images
    for row, image in zip(first_batch, regenerate(tiny_pipeline, first_batch, identities, (0.5, 0.8), seed=3)):
        assert np.array_equal(image, pixels(whole / row["file"]))


def test_a_killed_run_resumes_to_the_same_dataset(whole, models, tiny_vae_folder, tmp_path):
    out = tmp_path / "faces"
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    process = subprocess.Popen([sys.executable, "-m", "arc2face_core", *command(models, tiny_vae_folder, out,
                                                                               *RECIPE)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parts = out / ".parts"
    deadline = time.time() + 240
    while not (parts.is_dir() and any(parts.glob("*.jsonl"))):
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "the run made no batch in 240 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = sorted(p.name for p in parts.glob("*.jsonl"))
    assert not (out / "manifest.jsonl").exists() and 1 <= len(done) < 6, done      # killed midway
    assert run(models, tiny_vae_folder, out, *RECIPE) == 0
    assert files_of(out) == files_of(whole)
    assert not any(".tmp-" in p.name for p in out.rglob("*")) and not parts.exists()


def run_killed_before_the_record(monkeypatch, models, vae, out: Path, recipe, batch: int, leftover: str) -> None:
    """A run that dies (as on Ctrl-C) after writing batch ``batch``'s images, before its record, leaving the
    temporary file ``leftover`` (relative to ``out``) as a kill mid-write would."""
    from arc2face_core.datasets.store import DatasetStore

    real = DatasetStore.finish_batch

    def die_at_the_batch(self, index, rows):
        if index == batch:
            (self.root / leftover).write_bytes(b"half a png")
            raise KeyboardInterrupt
        real(self, index, rows)

    with monkeypatch.context() as patched:
        patched.setattr(DatasetStore, "finish_batch", die_at_the_batch)
        with pytest.raises(KeyboardInterrupt):
            run(models, vae, out, *recipe)
    torch.set_num_threads(THREADS)
    assert not (out / ".parts" / f"{batch:06d}.jsonl").exists()


def test_resume_after_a_batch_half_written(whole, models, tiny_vae_folder, tmp_path, monkeypatch):
    """Deterministic variant: the run dies after writing batch 2's images, before its record; a leftover temporary
    file sits in an identity folder."""
    out = tmp_path / "faces"
    run_killed_before_the_record(monkeypatch, models, tiny_vae_folder, out, RECIPE, 2, "00002/.001.png.tmp-host-1")
    assert (out / "00002" / "000.png").is_file()
    assert run(models, tiny_vae_folder, out, *RECIPE) == 0
    assert files_of(out) == files_of(whole)


def test_shards_are_disjoint_and_their_union_is_the_dataset(whole, models, tiny_vae_folder, tmp_path):
    """Every shard asks for the RecordIO set: the one that finishes the dataset packs it and writes the report."""
    out = tmp_path / "faces"
    made = []
    for shard in ("1/3", "0/3", "2/3"):
        before = set((out / ".parts").glob("*.jsonl")) if (out / ".parts").is_dir() else set()
        assert run(models, tiny_vae_folder, out, *RECIPE, "--shard", shard, "--format", "rec",
                   "--pack-full-images") == 0
        if shard != "2/3":
            assert not (out / "manifest.jsonl").exists() and not (out / "train.rec").exists()
            assert not (out / "report.md").exists()
            made.append(sorted(p.name for p in set((out / ".parts").glob("*.jsonl")) - before))
    assert made == [["000002.jsonl", "000003.jsonl"], ["000000.jsonl", "000001.jsonl"]]   # 6 batches, 2 each
    packed = {name: files_of(out).pop(name) for name in ("train.rec", "train.idx", "property", "pack.json")}
    assert {k: v for k, v in files_of(out).items() if k not in packed} == files_of(whole)
    again = tmp_path / "again"                                                 # the same set from the whole run
    assert cli_main(["pack", str(whole), "--full-images", "--out", str(again), "-q"]) == 0
    assert all((again / name).read_bytes() == data for name, data in packed.items())
    assert len((out / "runs.jsonl").read_text().splitlines()) == 3            # one line per shard


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def _running_ray_tasks(title: bytes = b"ray::_make_batches") -> list[int]:
    """Worker processes of this test's own Ray cluster busy with a dataset task (Ray retitles them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                running = (entry / "cmdline").read_bytes().startswith(title)
            except OSError:
                continue
            if running and _descends_from(int(entry.name), os.getpid()):
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds Ray's worker processes through /proc")
def test_a_local_ray_run_with_a_lost_worker_equals_the_sequential_run(whole, models, tiny_vae_folder, tmp_path):
    """ray.init(num_cpus=2): two workers of one CPU each make the six batches. Once the first batch is recorded, one
    worker is killed; Ray runs its task again, which skips the batches already done. Before, workers of more threads
    than a node has CPUs are refused without writing anything, so the run that follows starts in the same folder."""
    import threading

    ray = pytest.importorskip("ray")
    out = tmp_path / "faces"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    killed, result = [], {}
    try:
        # workers of 3 threads cannot fit on a node of 2 CPUs: refused before the folder is touched
        assert run(models, tiny_vae_folder, out, *RECIPE, "--ray", "--cpu-threads", "3") == 2
        assert not out.exists()
        runner = threading.Thread(target=lambda: result.update(code=run(models, tiny_vae_folder, out, *RECIPE,
                                                                        "--ray")))
        runner.start()
        deadline = time.time() + 300
        while runner.is_alive() and not killed and time.time() < deadline:
            if (out / ".parts").is_dir() and any((out / ".parts").glob("*.jsonl")):
                for pid in _running_ray_tasks()[:1]:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.02)
        runner.join(timeout=300)
    finally:
        ray.shutdown()
    assert killed, "no Ray worker was busy with a dataset task after the first batch"
    assert result.get("code") == 0
    assert files_of(out) == files_of(whole)


# ---------------------------------------------------------------------------------- the identity check in datasets


def test_min_similarity_redraws_and_drops_as_documented(models, tiny_vae_folder, tmp_path):
    recipe = ("--identities", "4", "--ids-per-batch", "2", "--seed", "11", "--images-per-id", "3")
    plain = tmp_path / "plain"
    assert run(models, tiny_vae_folder, plain, *recipe) == 0
    first = {(r["identity"], r["image"]): r for r in manifest(plain)}
    threshold = float(np.percentile([r["similarity"] for r in first.values()], 75))   # a quarter pass each try
    strict = tmp_path / "strict"
    assert run(models, tiny_vae_folder, strict, *recipe, "--min-similarity", str(threshold),
               "--max-attempts", "3") == 0
    rows = manifest(strict)
    assert len(rows) == 12 and len({(r["identity"], r["image"]) for r in rows}) == 12     # each image once
    outcomes = set()
    for row in rows:
        key = (row["identity"], row["image"])
        assert row["tries"][0] == first[key]["similarity"]         # attempt 0 is the plain run's image
        assert row["attempt"] == len(row["tries"]) - 1 and row["similarity"] == row["tries"][-1]
        assert row["seed"] == image_seed(11, *key, row["attempt"])
        assert all(score < threshold for score in row["tries"][:-1])                      # redrawn only below
        if row["dropped"]:
            assert len(row["tries"]) == 3 and row["tries"][-1] < threshold and row["file"] is None
            assert not (strict / f"{key[0]:05d}/{key[1]:03d}.png").exists()
            outcomes.add("dropped")
        else:
            assert row["similarity"] >= threshold
            if row["attempt"] == 0:
                assert (strict / row["file"]).read_bytes() == (plain / first[key]["file"]).read_bytes()
            outcomes.add("kept" if row["attempt"] == 0 else "redrawn")
    assert outcomes == {"kept", "redrawn", "dropped"}          # all three paths taken: the test can fail


def test_redraws_under_jitter_take_their_attempts_own_vector(models, tiny_vae_folder, tmp_path):
    """--id-jitter with --min-similarity: a redrawn image gets its attempt's own jittered vector (the documented jitter
    seed of that attempt), as its manifest row says. Reusing the first try's vector would pass every other test.

    The vector is worked out here from the documented recipe, normalize(identity + J g) with g ~ N(0, I/512) drawn from
    the attempt's jitter seed (J = 0.5 with floor 0.5, which it never reaches), and compared with the row's recorded
    cosine. (The tiny UNet barely follows its conditioning, so pixels cannot tell two vectors apart here.)"""
    recipe = ("--identities", "3", "--ids-per-batch", "1", "--seed", "5", "--images-per-id", "2",
              "--id-jitter", "0.5", "--id-jitter-floor", "0.5")
    plain = tmp_path / "plain"
    assert run(models, tiny_vae_folder, plain, *recipe) == 0
    threshold = float(np.percentile([r["similarity"] for r in manifest(plain)], 60))
    strict = tmp_path / "strict"
    assert run(models, tiny_vae_folder, strict, *recipe, "--min-similarity", str(threshold), "--max-attempts", "4") == 0
    identities, _ = load_embeddings(strict / "identities.safetensors")

    def documented_cosine(row: dict, attempt: int) -> float:
        seed = documented_seed(5, row["identity"], row["image"], attempt, "jitter")
        g = torch.randn(512, generator=torch.Generator("cpu").manual_seed(seed)).double() / 512 ** 0.5
        identity = identities[row["identity"]].double()
        vector = identity + 0.5 * g
        return float(vector @ identity / vector.norm() / identity.norm())

    redrawn = [r for r in manifest(strict) if r["attempt"] > 0]
    assert redrawn, "no image was redrawn: the test would prove nothing"
    for row in redrawn:
        assert row["jitter_similarity"] == pytest.approx(documented_cosine(row, row["attempt"]), abs=1e-6)
        assert abs(row["jitter_similarity"] - documented_cosine(row, 0)) > 1e-4     # not the first try's vector


def test_no_similarity_leaves_the_scores_out(models, tiny_vae_folder, tmp_path):
    out = tmp_path / "faces"
    assert run(models, tiny_vae_folder, out, "--identities", "1", "--images-per-id", "1", "--no-similarity") == 0
    (row,) = manifest(out)
    assert row["similarity"] is None and row["tries"] == [None] and row["file"] == "00000/000.png"


def test_one_pose_per_identity(models, tiny_vae_folder, tmp_path, tiny_control_pipeline):
    from arc2face_core.cli.main import read_normal_map
    from arc2face_core.pose.hint import prepare_normal_map
    from fixtures_comfyui import sphere_normal_map

    maps = []
    for index, tilt in enumerate((0.0, 0.6)):
        maps.append(tmp_path / f"pose_{index}.png")
        Image.fromarray(sphere_normal_map(64, tilt)).save(maps[-1])
    out = tmp_path / "faces"
    assert run(models, tiny_vae_folder, out, "--identities", "2", "--images-per-id", "1", "--ids-per-batch", "2",
               "--normal-map", str(maps[0]), "--normal-map", str(maps[1])) == 0
    settings = json.loads((out / "dataset.json").read_text())["settings"]
    assert settings["pose"]["normal_maps"] == ["pose_0.png", "pose_1.png"] and settings["files"]["controlnet"]["bytes"]
    assert len(settings["pose"]["hint_sha256"]) == 64
    identities, _ = load_embeddings(out / "identities.safetensors")
    rows = manifest(out)
    noise = torch.cat([torch.randn([1, 4, SIZE // 2, SIZE // 2], generator=torch.manual_seed(r["seed"]))
                       for r in rows])
    hints = torch.cat([prepare_normal_map(read_normal_map(path)) for path in maps])
    torch.set_num_threads(1)
    try:
        posed = tiny_control_pipeline.generate(identities, 1, STEPS, 3.0, SIZE, SIZE, noise=noise, hint=hints)
        swapped = tiny_control_pipeline.generate(identities, 1, STEPS, 3.0, SIZE, SIZE, noise=noise,
                                                 hint=hints.flip(0))
    finally:
        torch.set_num_threads(THREADS)
    for row, image, other in zip(rows, posed, swapped):
        assert np.array_equal(pixels(out / row["file"]), image)          # identity i with map i
        assert np.abs(image.astype(int) - other.astype(int)).mean() > 0.5  # the pairing shows in the pixels


# ---------------------------------------------------------------------------------------- samplers and refusals


def test_pca_from_photos_prepare_only(models, tiny_vae_folder, tmp_path, astronaut_scene, face_analyzer):
    photos = tmp_path / "photos" / "person"
    photos.mkdir(parents=True)
    face = astronaut_scene.image
    variants = [np.clip(face.astype(int) + shift, 0, 255).astype(np.uint8) for shift in (-60, -30, 0, 30, 60)]
    for index, image in enumerate(variants + [face[:, :, ::-1].copy(), np.zeros_like(face)]):
        Image.fromarray(image).save(photos / f"{index}.png")
    out = tmp_path / "faces"
    with pytest.warns(UserWarning, match="only 6 embeddings"):
        assert run(models, tiny_vae_folder, out, "--identities", "2", "--identity-threshold", "0.9",
                   "--pca", str(photos.parent), "--prepare-only") == 0
    assert not list(out.glob("0*"))                                 # nothing generated
    from arc2face_core.datasets.pca import IdentityPCA

    pca = IdentityPCA.load(out / "identity_pca.safetensors")
    assert pca.samples == 6 and pca.rank == 5 and pca.source["without_face"] == 1     # the black photo
    embeds = face_analyzer.embed([np.ascontiguousarray(v[..., ::-1]) for v in variants + [face[:, :, ::-1]]]).embeds
    np.testing.assert_allclose(pca.mean.numpy(), embeds.mean(dim=0).numpy(), atol=1e-5)
    identities, source = load_embeddings(out / "identities.safetensors")
    assert identities.shape == (2, 512) and source["sampler"] == "pca" and source["pca_components"] == 5
    again = tmp_path / "again"                                       # the saved PCA, reused as a file
    assert run(models, tiny_vae_folder, again, "--identities", "2", "--identity-threshold", "0.9",
               "--pca", str(out / "identity_pca.safetensors"), "--prepare-only") == 0
    assert torch.equal(load_embeddings(again / "identities.safetensors")[0], identities)


def test_given_identities_are_used_as_they_are(models, tiny_vae_folder, tmp_path):
    from arc2face_core.identity.files import save_embeddings

    given = unique_identities(3, seed=99).embeds
    save_embeddings(tmp_path / "people.safetensors", given, {"made_by": "a test"})
    out = tmp_path / "faces"
    assert run(models, tiny_vae_folder, out, "--embeddings", str(tmp_path / "people.safetensors"),
               "--prepare-only") == 0
    identities, source = load_embeddings(out / "identities.safetensors")
    assert torch.equal(identities, given) and source["sampler"] == "file" and source["source"]["made_by"] == "a test"
    settings = json.loads((out / "dataset.json").read_text())["settings"]
    assert settings["identities"] == 3 and settings["identity"] == {"sampler": "file", "file": "people.safetensors"}


def test_a_failed_first_run_leaves_no_recipe_behind(models, tiny_vae_folder, tmp_path, capsys):
    out = tmp_path / "faces"
    photos = tmp_path / "black"
    photos.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(photos / "0.png")
    assert run(models, tiny_vae_folder, out, "--identities", "2", "--pca", str(photos), "--prepare-only") == 2
    assert "no face found in any of its 1 photos" in capsys.readouterr().err
    assert not (out / "dataset.json").exists()                     # so another --pca can start in this folder
    assert run(models, tiny_vae_folder, out, "--identities", "2", "--prepare-only") == 0


@pytest.mark.parametrize("extra, message", [
    ((), "give --identities N"),
    (("--identities", "2", "--min-similarity", "0.5", "--no-similarity"), "--min-similarity needs the identity"),
    (("--identities", "2", "--shard", "3/3"), "--shard 3/3"),
    (("--identities", "2", "--ray", "--shard", "0/2"), "--shard is for separate jobs"),
    (("--identities", "0"), "--identities must be a whole number from 1"),
    (("--identities", "2", "--id-jitter", "nan"), "identity jitter must be"),
    (("--identities", "2", "--embeddings", "x.safetensors"), "choose one"),
    (("--identities", "2", "--format", "rec"), "make the dataset with --crop arcface, or pass --pack-full-images"),
    (("--identities", "2", "--pack-layout", "dali"), "go with --format rec"),
    (("--identities", "2", "--exclude-threshold", "0.4"), "--exclude-threshold needs --exclude-identities"),
    (("--identities", "2", "--exclude-identities", "people.safetensors", "--exclude-threshold", "0"),
     "--exclude-threshold must be a cosine similarity in (0, 1]"),
    (("--identities", "2", "--pca", "nowhere"), "--pca nowhere does not exist"),    # found before writing anything
])
def test_bad_dataset_options_are_refused(models, tiny_vae_folder, tmp_path, capsys, extra, message):
    if "--embeddings" in extra:
        extra = extra[:2] + ("--pca", "photos") + extra[2:]
    assert cli_main(command(models, tiny_vae_folder, tmp_path / "out", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------- RecordIO output


def test_format_rec_packs_the_finished_dataset_and_a_rerun_finishes_a_killed_pack(models, tiny_vae_folder, tmp_path,
                                                                                    monkeypatch):
    """The pack at the end of a run, read back with the independent reader of test_dataset_recordio; killed during
    its second chunk of records, the same command finishes it to the bytes the pack subcommand writes."""
    import cv2
    from test_dataset_recordio import read_records

    from arc2face_core.datasets import pack as packing
    from arc2face_core.datasets.recordio import IndexedWriter

    out = tmp_path / "faces"
    recipe = ("--identities", "3", "--seed", "5", "--format", "rec", "--pack-full-images", "--no-report")
    monkeypatch.setattr(packing, "CHUNK", 2)
    real = IndexedWriter.write
    monkeypatch.setattr(IndexedWriter, "write", lambda self, p: (_ for _ in ()).throw(KeyboardInterrupt)
                        if self.count >= 2 else real(self, p))
    with pytest.raises(KeyboardInterrupt):
        run(models, tiny_vae_folder, out, *recipe)
    torch.set_num_threads(THREADS)
    assert (out / "manifest.jsonl").is_file() and not (out / "train.rec").exists()
    monkeypatch.setattr(IndexedWriter, "write", real)
    assert run(models, tiny_vae_folder, out, *recipe) == 0
    assert cli_main(["pack", str(out), "--full-images", "--out", str(tmp_path / "again"), "-q"]) == 0
    for name in ("train.rec", "train.idx", "property"):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    records, _ = read_records(out / "train.rec", out / "train.idx")
    rows = manifest(out)
    assert records[0]["labels"].tolist() == [7, 10]                       # 6 images, then 3 identity ranges
    for key, row in enumerate(rows, start=1):   # the tiny models paint pixel noise: JPEG as mxnet's pack_img makes it
        assert records[key]["label"] == row["identity"]
        jpeg = np.asarray(Image.open(io.BytesIO(records[key]["data"])).convert("RGB")).astype(int)
        ok, reference = cv2.imencode(".jpg", pixels(out / row["file"])[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        theirs = cv2.imdecode(reference, cv2.IMREAD_COLOR)[..., ::-1].astype(int)
        assert ok and np.abs(jpeg - theirs).mean() < 1
    assert (out / "property").read_text() == "3,32,32\n" and not (out / "report.md").exists()


def test_generate_stays_the_default_and_writes_the_identities_file(models, tiny_vae_folder, tmp_path):
    out = tmp_path / "flat"
    args = ["--models", str(models), "--vae", str(tiny_vae_folder), "--random-identities", "2", "--seed", "4",
            "--steps", "1", "--width", "32", "--height", "32", "--images-per-id", "1", "--out", str(out), "-q"]
    assert cli_main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["embeddings.pt", "id000_00.png", "id001_00.png",
                                                     "identities.safetensors", "settings.json"]
    saved, source = load_embeddings(out / "identities.safetensors")
    assert torch.equal(saved, torch.load(out / "embeddings.pt", weights_only=True))
    assert source["source"] == "random" and source["identity_seed"] == 4
    rerun = tmp_path / "rerun"           # an identities file as the source: the same images
    assert cli_main(["generate"] + args[:4] + ["--embeddings", str(out / "identities.safetensors")] + args[6:-3] +
                    ["--out", str(rerun), "-q"]) == 0
    for name in ("id000_00.png", "id001_00.png"):
        assert np.array_equal(pixels(out / name), pixels(rerun / name))
