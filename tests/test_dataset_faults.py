"""``dataset`` under faults (issue 21): identity files equal byte for byte across processes, refused starts that
leave the folder as it was, damaged records and images found and made again, a full disk, Ray addresses.

After every fault the same command is run again and must finish the dataset equal, byte for byte (identity files
included, dataset.json but its creation time), to the uninterrupted run of ``test_datasets.whole``. The full disk is
simulated where every file of the pack is written, ``io.open`` (``Path.write_bytes`` opens through it): the file
takes half of what is written, then the write fails with ENOSPC, as write(2) does when a disk fills.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import test_datasets
import torch
from test_datasets import RECIPE, REPO, command, files_of, run

models = test_datasets.models       # its fixtures: the tiny models folder, the uninterrupted run of RECIPE
whole = test_datasets.whole

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

LEFTOVER = ".tmp-"


def leftovers(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob(f"*{LEFTOVER}*"))


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("arc2face: error:")]


# ------------------------------------------------------------------------- identity files, the same in every process

WRITE_BOTH = """
import sys, torch
from arc2face_core.datasets.pca import IdentityPCA
from arc2face_core.identity.files import embeddings_bytes
rows = torch.nn.functional.normalize(torch.randn(6, 512, generator=torch.Generator().manual_seed(3)), dim=1)
source = {"sampler": "unique random unit vectors", "identity_seed": 5, "threshold": 0.3, "candidates": 6}
open(sys.argv[1], "wb").write(embeddings_bytes(rows, source))
IdentityPCA.fit(rows, 3, {"embeddings": "people.safetensors"}).save(sys.argv[2])
"""


def test_identity_files_are_byte_identical_across_processes(tmp_path):
    """The identities file and the PCA file written by four fresh processes (different hash seeds): one set of bytes,
    which safetensors' own reader reads as the tensors and metadata given."""
    from safetensors import safe_open

    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", WRITE_BOTH, str(tmp_path / f"ids{i}.safetensors"),
                               str(tmp_path / f"pca{i}.safetensors")], env=dict(env, PYTHONHASHSEED=str(i)),
                              stderr=subprocess.PIPE) for i in range(4)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]
    for kind in ("ids", "pca"):
        digests = {hashlib.sha256((tmp_path / f"{kind}{i}.safetensors").read_bytes()).hexdigest() for i in range(4)}
        assert len(digests) == 1, kind
    rows = torch.nn.functional.normalize(torch.randn(6, 512, generator=torch.Generator().manual_seed(3)), dim=1)
    with safe_open(str(tmp_path / "ids0.safetensors"), framework="pt") as handle:
        assert torch.equal(handle.get_tensor("embeddings"), rows)
        assert handle.metadata()["format"] == "arc2face.identities" and json.loads(handle.metadata()["source"]) == {
            "sampler": "unique random unit vectors", "identity_seed": 5, "threshold": 0.3, "candidates": 6}
    with safe_open(str(tmp_path / "pca0.safetensors"), framework="pt") as handle:
        assert handle.get_tensor("components").shape == (3, 512) and handle.metadata()["samples"] == "6"


def test_safetensors_bytes_is_the_library_file_with_a_sorted_header():
    """Same header (as JSON) and same tensor bytes as safetensors.torch.save; the header's keys in sorted order,
    padded to 8 bytes as the format asks."""
    from safetensors.torch import load, save

    from arc2face_core.checkpoints import safetensors_bytes

    tensors = {"b": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a": torch.ones(5, dtype=torch.float16)}
    metadata = {"zeta": "1", "alpha": "two", "mid": json.dumps({"x": [1, 2]})}
    ours, theirs = safetensors_bytes(tensors, metadata), save(tensors, metadata=metadata)
    size, their_size = int.from_bytes(ours[:8], "little"), int.from_bytes(theirs[:8], "little")
    header = ours[8:8 + size]
    assert size % 8 == 0 and json.loads(header) == json.loads(theirs[8:8 + their_size])
    assert ours[8 + size:] == theirs[8 + their_size:]
    assert header.rstrip(b" ").startswith(b'{"__metadata__":{"alpha":"two","mid":') and b'},"a":{' in header
    loaded = load(ours)
    assert torch.equal(loaded["a"], tensors["a"]) and torch.equal(loaded["b"], tensors["b"])


# ------------------------------------------------------------------------------------ a refused start writes nothing


def test_a_file_that_is_not_a_vae_is_refused_before_anything_is_written(models, tiny_vae_folder, whole, tmp_path,
                                                                        capsys):
    out = tmp_path / "faces"
    unet = models / "arc2face" / "arc2face" / "diffusion_pytorch_model.safetensors"
    assert run(models, unet, out, *RECIPE) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert f"{unet} is not a VAE" in line and "Pass SD1.5's VAE with --vae" in line
    assert not out.exists()
    assert run(models, tiny_vae_folder, out, *RECIPE) == 0        # the corrected command, same folder
    assert files_of(out) == files_of(whole)


@pytest.mark.parametrize("damage, message", [
    (lambda path: path.write_bytes(path.read_bytes()[:-100]), "not a readable safetensors file"),
    (lambda path: path.write_bytes(b"not a safetensors file at all"), "not a readable safetensors file"),
])
def test_check_vae_reads_only_the_header(tiny_vae_file, tmp_path, damage, message):
    from arc2face_core.diffusers_backend.model_files import check_vae
    from arc2face_core.errors import CorruptWeightsError

    check_vae(tiny_vae_file)                                        # the real file passes
    broken = tmp_path / "vae.safetensors"
    shutil.copyfile(tiny_vae_file, broken)
    damage(broken)
    with pytest.raises(CorruptWeightsError, match=message):
        check_vae(broken)


def test_a_folder_where_no_batch_was_recorded_takes_new_settings(models, tiny_vae_folder, tmp_path, monkeypatch,
                                                                 capsys):
    """A first start with other settings dies after writing its first batch's images, before the record: the folder
    then holds dataset.json, identities.safetensors and images. A run with new settings starts over there and makes
    exactly what it makes in an empty folder."""
    from arc2face_core.datasets.store import DatasetStore

    out = tmp_path / "faces"

    def die(self, batch, rows):
        raise KeyboardInterrupt

    monkeypatch.setattr(DatasetStore, "finish_batch", die)
    with pytest.raises(KeyboardInterrupt):
        run(models, tiny_vae_folder, out, "--identities", "3", "--images-per-id", "3", "--seed", "1")
    torch.set_num_threads(torch.get_num_threads())
    monkeypatch.undo()
    assert (out / "00000" / "002.png").is_file() and (out / "dataset.json").is_file()
    assert run(models, tiny_vae_folder, out, *RECIPE) == 0
    assert "starting over with these" in capsys.readouterr().err
    fresh = tmp_path / "fresh"
    assert run(models, tiny_vae_folder, fresh, *RECIPE) == 0
    assert files_of(out) == files_of(fresh)                        # no image of the first start is left


# ------------------------------------------------------------------------------------------------- damaged records


def _cut_last_line(data: bytes) -> bytes:
    return data[:-25]


def _other_identity_on_line_2(data: bytes) -> bytes:
    lines = data.decode().splitlines(keepends=True)
    row = json.loads(lines[1])
    row["identity"] += 4
    lines[1] = json.dumps(row) + "\n"
    return "".join(lines).encode()


@pytest.mark.parametrize("damage, where, reason", [
    (_cut_last_line, "000001.jsonl, line 2", "cut short"),
    (_other_identity_on_line_2, "000001.jsonl, line 2", "identity 5 image 1 where batch 1 has identity 1 image 1"),
])
def test_a_damaged_batch_record_is_made_again(models, tiny_vae_folder, whole, tmp_path, capsys, damage, where, reason):
    out = tmp_path / "faces"
    assert run(models, tiny_vae_folder, out, *RECIPE, "--shard", "0/3") == 0          # batches 0 and 1
    record = out / ".parts" / "000001.jsonl"
    record.write_bytes(damage(record.read_bytes()))
    assert run(models, tiny_vae_folder, out, *RECIPE) == 0
    warning = next(line for line in capsys.readouterr().err.splitlines() if where in line)
    assert reason in warning and "batch 1 is made again" in warning
    assert files_of(out) == files_of(whole)


def test_a_damaged_manifest_line_is_named_and_its_batch_made_again(models, tiny_vae_folder, whole, tmp_path, capsys):
    out = tmp_path / "faces"
    shutil.copytree(whole, out)
    lines = (out / "manifest.jsonl").read_bytes().splitlines(keepends=True)
    lines[6] = lines[6][:40] + b"\n"                                                   # batch 3's first image
    (out / "manifest.jsonl").write_bytes(b"".join(lines))
    assert run(models, tiny_vae_folder, out, *RECIPE) == 0
    err = capsys.readouterr().err
    assert "manifest.jsonl, line 7: not a JSON object" in err and "batch 3 is made again" in err
    assert files_of(out) == files_of(whole)


@pytest.mark.parametrize("text, line, message", [
    (b'{"identity": 0}\n', 1, "the field 'image' is missing"),
    (b"[1, 2]\n", 1, "must be a JSON object"),
    (b"\n", 1, "not a JSON object"),
])
def test_record_lines_are_checked(tmp_path, text, line, message):
    from arc2face_core.datasets.records import parse_lines
    from arc2face_core.errors import DamagedFileError

    good = {"identity": 0, "image": 0, "file": "00000/000.png", "seed": 5, "attempt": 0, "similarity": 0.5,
            "dropped": False, "tries": [0.5], "batch": 0}
    data = (json.dumps(good) + "\n").encode() + text
    with pytest.raises(DamagedFileError, match=re.escape(f"x.jsonl, line {line + 1}: ") + ".*" + re.escape(message)):
        parse_lines(data, Path("x.jsonl"))
    assert [entry.row for entry in parse_lines(data[:-len(text)], Path("x.jsonl"))] == [good]


# ------------------------------------------------------------------------------------------------------- --verify


def _truncate(path: Path, whole_dir: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _other_image(path: Path, whole_dir: Path) -> None:      # a whole PNG of the right size, but not this image
    shutil.copyfile(whole_dir / "00000" / "000.png", path)


def _delete(path: Path, whole_dir: Path) -> None:
    path.unlink()


@pytest.mark.parametrize("damage, problem, complete", [
    (_truncate, "not a whole PNG", True),
    (_other_image, "a whole PNG, but not the image recorded (its SHA-256 differs)", False),
    (_delete, "the file is missing", True),
])
def test_verify_makes_a_batch_with_a_damaged_image_again(models, tiny_vae_folder, whole, tmp_path, capsys, damage,
                                                         problem, complete):
    out = tmp_path / "faces"
    if complete:
        shutil.copytree(whole, out)
    else:                                                       # batches 0 and 1 recorded, no manifest yet
        assert run(models, tiny_vae_folder, out, *RECIPE, "--shard", "0/3") == 0
    damaged = out / "00001" / "001.png"
    damage(damaged, whole)
    if complete:                                                # a plain rerun trusts the records
        assert run(models, tiny_vae_folder, out, *RECIPE) == 0
        assert files_of(out) != files_of(whole)
    assert run(models, tiny_vae_folder, out, *RECIPE, "--verify") == 0
    warning = next(line for line in capsys.readouterr().err.splitlines() if "--verify:" in line)
    assert f"{damaged}: {problem}" in warning and "batch 1 is made again" in warning
    assert files_of(out) == files_of(whole)


# --------------------------------------------------------------------------------------------------- a full disk


class _FillsUp:
    """A file that takes half of what is written and then fails with ENOSPC."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()

    def write(self, data) -> int:
        data = bytes(data)
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def close(self) -> None:
        self.handle.close()


def _fill_disk_at(monkeypatch, fragment: str) -> None:
    real = io.open

    def open_(file, mode="r", *args, **kwargs):
        handle = real(file, mode, *args, **kwargs)
        name = os.fspath(file) if isinstance(file, (str, os.PathLike)) else ""
        return _FillsUp(handle) if "w" in mode and fragment in name and LEFTOVER in name else handle

    monkeypatch.setattr(io, "open", open_)


def _free_bytes(text: str) -> float:
    number, unit = re.search(r"with ([\d.]+) (bytes|KiB|MiB|GiB|TiB) free", text).groups()
    return float(number) * 1024 ** ["bytes", "KiB", "MiB", "GiB", "TiB"].index(unit)


@pytest.mark.parametrize("fragment, written", [
    (".identities.safetensors", "identities.safetensors"),                   # while preparing
    ("00002/.000.png", "00002/000.png"),                                     # an image (a writer thread)
    (".manifest.jsonl", "manifest.jsonl"),                                   # at the end
])
def test_a_full_disk_ends_in_one_line_and_leaves_no_temporary_file(models, tiny_vae_folder, whole, tmp_path,
                                                                    monkeypatch, capsys, fragment, written):
    out = tmp_path / "faces"
    _fill_disk_at(monkeypatch, fragment)
    assert run(models, tiny_vae_folder, out, *RECIPE) == 2
    monkeypatch.undo()
    err = capsys.readouterr().err
    (line,) = error_lines(err)
    assert "Traceback" not in err
    assert line.startswith(f"arc2face: error: the disk is full: writing {out / written} (")
    assert "run the same command again" in line
    assert abs(_free_bytes(line) - shutil.disk_usage(out).free) < max(0.05 * shutil.disk_usage(out).free, 2 ** 30)
    assert leftovers(out) == []
    assert run(models, tiny_vae_folder, out, *RECIPE) == 0
    assert files_of(out) == files_of(whole)


# ------------------------------------------------------------------------------------------------- Ray addresses


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _cli(models: Path, vae: Path, out: Path, *extra: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
    args = [a for a in command(models, vae, out, "--identities", "2", *extra) if a != "-q"]
    env = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "arc2face_core", *args], env=dict(env, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=timeout)


def test_a_ray_address_where_nothing_answers_is_refused_naming_it(models, tiny_vae_folder, tmp_path):
    pytest.importorskip("ray")
    address = f"127.0.0.1:{_free_port()}"
    out = tmp_path / "faces"
    done = _cli(models, tiny_vae_folder, out, "--ray", address, env=dict(os.environ), timeout=120)
    (line,) = error_lines(done.stderr)
    assert done.returncode == 2 and f"--ray {address}" in line and "no Ray cluster answers there" in line
    assert "leave out the address to start a local Ray" in line and not out.exists()


def test_ray_without_an_address_starts_a_local_ray_not_the_last_cluster(models, tiny_vae_folder, tmp_path):
    """Ray's last-cluster file names a cluster that is gone: ``--ray`` alone must start its own, not wait for it."""
    pytest.importorskip("ray")
    ray_tmp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))    # short: Ray's socket paths must stay < 108 bytes
    try:
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{_free_port()}")
        out = tmp_path / "faces"
        done = _cli(models, tiny_vae_folder, out, "--ray", "--prepare-only", env=dict(os.environ,
                    RAY_TMPDIR=str(ray_tmp)), timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Ray: a local Ray started on this machine" in done.stderr
        assert (out / "dataset.json").is_file() and (out / "identities.safetensors").is_file()
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
