"""Safe reading of weight files: pickles never run code, broken files say which file and what to do."""

from __future__ import annotations

import datetime
import gc
import os
import pickle
import re

import pytest
import torch
from safetensors.torch import save_file

from arc2face_core.checkpoints import BackgroundRead, as_state_dict, check_finite, load_state_dict, read_checkpoint
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


def test_the_refusal_of_code_names_what_the_file_asked_for(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"x": RunsCode(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(CorruptWeightsError, match=r"asks to run Python code .*\nDetail: .*GLOBAL io\.open"):
        read_checkpoint(tmp_path / "evil.pt")
    with open(tmp_path / "evil4.pt", "wb") as handle:          # a plain pickle (protocol 4): torch cannot even parse
        pickle.dump(RunsCode(str(marker)), handle, protocol=4)
    with pytest.raises(CorruptWeightsError, match=r"asks to run Python code .*\nDetail: it refers to io\.open"):
        read_checkpoint(tmp_path / "evil4.pt")
    assert not marker.exists()


@pytest.mark.parametrize("text, said", [
    ("photo of a person\n", "probably an error page or a note saved under the weights' name"),
    ("Entry not found", "probably an error page"),
    ("<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "probably an error page"),
    ("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 492265879\n",
     "a Git LFS pointer, not the file itself"),
])
def test_a_text_file_named_as_weights_is_called_a_text_file_not_code(tmp_path, text, said):
    """A text file named .pt/.bin used to be reported as "asks to run Python code"."""
    path = tmp_path / "pytorch_model.pt"
    path.write_text(text)
    with pytest.raises(CorruptWeightsError) as err:
        read_checkpoint(path)
    message = str(err.value)
    first = text.strip().splitlines()[0][:80]
    assert f"{path} is a text file beginning {first!r}, not PyTorch weights: {said}" in message
    assert "run Python code" not in message


def test_binary_garbage_is_not_called_code(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(bytes(range(7, 200)) * 3)
    with pytest.raises(CorruptWeightsError) as err:
        read_checkpoint(path)
    assert "run Python code" not in str(err.value) and str(path) in str(err.value)


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


# ------------------------------------------------------------------------------------------------ NaN/inf


def _mapped(path) -> bool:
    """Whether the operating system lists ``path`` among this process's memory mappings (Linux)."""
    return str(path) in open("/proc/self/maps").read()


@pytest.mark.parametrize("values, bad", [
    ([1.0, float("nan"), 2.0], True),
    ([1.0, float("inf"), 2.0], True),
    ([-float("inf"), 0.0], True),
    ([float("inf"), -float("inf")], True),     # their sum is NaN, not inf: still caught
    ([3e38, 3e38, -1.0], False),               # finite, though their float32 sum overflows to inf
    ([-3e38, -3e38], False),
    ([0.0, -0.0, 1e-45], False),               # signed zero, the smallest subnormal
])
def test_check_finite_refuses_exactly_the_tensors_with_nan_or_inf(values, bad):
    tensor = torch.tensor(values, dtype=torch.float32)
    assert torch.isfinite(tensor).all().item() is not bad   # the element-wise truth the check must reproduce
    sd = {"ok.weight": torch.ones(3), "layer.weight": tensor, "steps": torch.tensor([2 ** 62])}
    if bad:
        with pytest.raises(CorruptWeightsError, match=r"w\.bin: tensor 'layer\.weight' contains NaN or infinite"):
            check_finite(sd, "w.bin")
    else:
        check_finite(sd, "w.bin")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_check_finite_in_other_float_widths(dtype):
    big = torch.full((64,), torch.finfo(dtype).max / 2, dtype=dtype)   # finite; 64 of them overflow the width
    check_finite({"big": big}, "w.safetensors")
    for poison in (float("nan"), float("inf"), -float("inf")):
        tensor = big.clone()
        tensor[17] = poison
        with pytest.raises(CorruptWeightsError, match="'big' contains NaN"):
            check_finite({"big": tensor}, "w.safetensors")


def test_check_finite_finds_the_bad_tensor_among_many():
    sd = {f"block.{i}.weight": torch.randn(16, 16, generator=torch.Generator().manual_seed(i)) for i in range(40)}
    sd["block.23.weight"][5, 9] = float("nan")
    with pytest.raises(CorruptWeightsError, match=r"'block\.23\.weight'"):
        check_finite(sd, "w.bin")


@pytest.mark.parametrize("poisoned", ["layers.0.weight", "layers.5.bias", "layers.9.weight", None])
def test_check_finite_on_tensors_that_share_one_buffer(tmp_path, poisoned):
    """A safetensors file maps every tensor into one buffer, end to end: the bad one is still the one named, and a
    run of huge finite values whose joint sum overflows is still accepted."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for i in range(10):
        sd[f"layers.{i}.weight"] = torch.randn(32, 16, generator=g)
        sd[f"layers.{i}.bias"] = torch.full((16,), 3e38) if i == 3 else torch.randn(16, generator=g)
    sd["steps"] = torch.arange(5)                        # not a float: never checked
    if poisoned:
        sd[poisoned].view(-1)[7] = float("nan")
    save_file(sd, str(tmp_path / "w.safetensors"))
    loaded = load_state_dict(tmp_path / "w.safetensors")
    if poisoned:
        with pytest.raises(CorruptWeightsError, match=f"tensor '{re.escape(poisoned)}' contains NaN") as err:
            check_finite(loaded, tmp_path / "w.safetensors")
        assert str(tmp_path / "w.safetensors") in str(err.value)
    else:
        check_finite(loaded, tmp_path / "w.safetensors")


def test_check_finite_on_views_of_one_tensor():
    base = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    sd = {"a": base[:400], "b": base[400:900].view(25, 20), "c": base[900:], "tied": base[:400]}
    check_finite(sd, "w.bin")
    base[650] = -float("inf")
    with pytest.raises(CorruptWeightsError, match="tensor 'b' contains NaN"):
        check_finite(sd, "w.bin")


# ------------------------------------------------------------------------------------------------ memory mapping


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads Linux's list of memory mappings")
@pytest.mark.parametrize("name", ["w.bin", "w.safetensors"])
def test_weights_are_memory_mapped_and_writes_never_reach_the_file(tmp_path, name):
    sd = {"a.weight": torch.randn(64, 64), "a.bias": torch.arange(64.0)}
    path = tmp_path / name
    torch.save(sd, path) if name.endswith(".bin") else save_file(sd, str(path))
    on_disk = path.read_bytes()
    loaded = load_state_dict(path)
    assert _mapped(path)                       # mapped, not read into a copy
    torch.testing.assert_close(loaded["a.weight"], sd["a.weight"], atol=0, rtol=0)
    loaded["a.weight"].add_(1.0)               # e.g. a patch applied in place: private to this process
    assert path.read_bytes() == on_disk
    torch.testing.assert_close(load_state_dict(path)["a.weight"], sd["a.weight"], atol=0, rtol=0)
    del loaded
    gc.collect()


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads Linux's list of memory mappings")
def test_a_legacy_pickle_is_read_whole_and_still_safely(tmp_path):
    """torch.save before PyTorch 1.6 wrote no zip archive: it cannot be mapped, and is read as before."""
    sd = {"a.weight": torch.randn(8, 8)}
    torch.save(sd, tmp_path / "old.bin", _use_new_zipfile_serialization=False)
    loaded = load_state_dict(tmp_path / "old.bin")
    assert not _mapped(tmp_path / "old.bin")
    torch.testing.assert_close(loaded["a.weight"], sd["a.weight"], atol=0, rtol=0)
    marker = tmp_path / "pwned"
    torch.save({"x": RunsCode(str(marker))}, tmp_path / "evil_old.bin", _use_new_zipfile_serialization=False)
    with pytest.raises(CorruptWeightsError, match="refuses"):
        read_checkpoint(tmp_path / "evil_old.bin")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ background reading


def test_background_read_returns_the_checked_state_dict(tmp_path):
    sd = {"a.weight": torch.randn(3, 4), "a.bias": torch.arange(3.0)}
    save_file(sd, str(tmp_path / "w.safetensors"))
    reading = BackgroundRead(tmp_path / "w.safetensors", prepare=lambda d: {"renamed." + k: v for k, v in d.items()})
    out = reading.result()
    assert out.keys() == {"renamed.a.weight", "renamed.a.bias"}
    torch.testing.assert_close(out["renamed.a.bias"], sd["a.bias"], atol=0, rtol=0)
    assert reading.result() is out


def test_background_read_errors_reach_the_caller_with_the_file_named(tmp_path):
    sd = {"a.weight": torch.randn(3, 4)}
    sd["a.weight"][1, 1] = float("inf")
    save_file(sd, str(tmp_path / "inf.safetensors"))
    with pytest.raises(CorruptWeightsError, match=r"inf\.safetensors: tensor 'a\.weight' contains NaN or inf"):
        BackgroundRead(tmp_path / "inf.safetensors").result()
    with pytest.raises(CorruptWeightsError, match=r"Cannot read .*absent\.safetensors.*from https://example\.org"):
        BackgroundRead(tmp_path / "absent.safetensors", source="https://example.org").result()


def test_background_read_hands_over_the_tensors_before_the_check_settles(tmp_path):
    sd = {"a.weight": torch.randn(3, 4)}
    sd["a.weight"][0, 2] = float("nan")
    save_file(sd, str(tmp_path / "nan.safetensors"))
    reading = BackgroundRead(tmp_path / "nan.safetensors")
    loaded = reading.loaded()                     # read: usable for building the model, not yet trusted
    assert loaded.keys() == {"a.weight"} and torch.isnan(loaded["a.weight"][0, 2])
    with pytest.raises(CorruptWeightsError, match=r"nan\.safetensors: tensor 'a\.weight' contains NaN"):
        reading.result()
    with pytest.raises(CorruptWeightsError, match=r"Cannot read .*absent\.safetensors"):
        BackgroundRead(tmp_path / "absent.safetensors").loaded()
