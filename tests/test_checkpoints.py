"""Safe reading of weight files: pickles never run code, broken files say which file and what to do."""

from __future__ import annotations

import datetime
import os

import pytest
import torch
from safetensors.torch import save_file

from arc2face_core.checkpoints import as_state_dict, load_state_dict, read_checkpoint
from arc2face_core.errors import CorruptWeightsError
from builders.pickles import RunsCode


def test_plain_state_dict_round_trip(tmp_path):
    sd = {"a.weight": torch.randn(3, 4), "a.bias": torch.arange(3.0)}
    torch.save(sd, tmp_path / "w.bin")
    save_file(sd, str(tmp_path / "w.safetensors"))
    for name in ("w.bin", "w.safetensors"):
        out = load_state_dict(tmp_path / name)
        assert out.keys() == sd.keys()
        torch.testing.assert_close(out["a.weight"], sd["a.weight"], atol=0, rtol=0)


def test_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"x": RunsCode(str(marker))}, tmp_path / "evil.bin")
    with pytest.raises(CorruptWeightsError, match="refuses") as err:
        read_checkpoint(tmp_path / "evil.bin")
    assert str(tmp_path / "evil.bin") in str(err.value)
    assert not marker.exists()


def test_pickle_of_foreign_objects_is_refused(tmp_path):
    torch.save({"when": datetime.datetime(2024, 1, 1)}, tmp_path / "odd.bin")
    with pytest.raises(CorruptWeightsError, match="not a plain weights file"):
        read_checkpoint(tmp_path / "odd.bin")


@pytest.mark.parametrize("name", ["w.bin", "w.safetensors"])
def test_truncated_files(tmp_path, name):
    sd = {"big": torch.randn(256, 256)}
    path = tmp_path / name
    torch.save(sd, path) if name.endswith(".bin") else save_file(sd, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptWeightsError, match="truncated or corrupt") as err:
        read_checkpoint(path, source="https://example.org/repo")
    assert str(path) in str(err.value) and "https://example.org/repo" in str(err.value)


def test_empty_file(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"")
    with pytest.raises(CorruptWeightsError, match="empty"):
        read_checkpoint(tmp_path / "w.bin")


def test_not_a_state_dict(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.bin")
    with pytest.raises(CorruptWeightsError, match="holds a list"):
        load_state_dict(tmp_path / "list.bin")
    torch.save({"a": 3}, tmp_path / "int.bin")
    with pytest.raises(CorruptWeightsError, match=r"entries \['a'\] are not tensors"):
        load_state_dict(tmp_path / "int.bin")


def test_nested_dict_is_not_flat():
    with pytest.raises(CorruptWeightsError, match="not a plain state dict"):
        as_state_dict({"image_proj": {"w": torch.zeros(1)}}, "exp_adapter.bin")


def test_unknown_extension(tmp_path):
    (tmp_path / "w.onnx").write_bytes(b"12345")
    with pytest.raises(CorruptWeightsError, match="unsupported weight file type"):
        read_checkpoint(tmp_path / "w.onnx")


def test_unreadable_path(tmp_path):
    with pytest.raises(CorruptWeightsError, match="Cannot read"):
        read_checkpoint(os.path.join(tmp_path, "absent.bin"))


def _safetensors_reads(path) -> bool:
    """The safetensors library's own verdict: the file opens and every tensor reads."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            for name in fh.keys():
                fh.get_tensor(name)
        return True
    except Exception:
        return False


@pytest.mark.parametrize("damage", ["whole", "cut in the data", "cut in the header", "8 bytes", "empty",
                                    "extra bytes", "garbage header length", "not json"])
def test_safetensors_check_agrees_with_the_library(tmp_path, damage):
    from arc2face_core.checkpoints import check_safetensors_file

    path = tmp_path / "model.safetensors"
    save_file({"a.weight": torch.randn(64, 32), "b.bias": torch.randn(7)}, str(path), metadata={"format": "pt"})
    data = path.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    damaged = {"whole": data, "cut in the data": data[:-100], "cut in the header": data[:header_end - 5],
               "8 bytes": data[:8], "empty": b"", "extra bytes": data + b"\0" * 16,
               "garbage header length": (10 ** 12).to_bytes(8, "little") + data[8:],
               "not json": data[:8] + b"x" * (header_end - 8) + data[header_end:]}[damage]
    path.write_bytes(damaged)
    readable = _safetensors_reads(path)
    assert readable == (damage == "whole")
    if readable:
        check_safetensors_file(path, source="https://example.org/model")
        return
    with pytest.raises(CorruptWeightsError) as err:
        check_safetensors_file(path, source="https://example.org/model")
    assert str(err.value).startswith(f"{path} is not a readable safetensors file (")
    assert f"it is probably truncated or corrupt. Delete {path} and download it again from https://example.org/model."\
        in str(err.value)
