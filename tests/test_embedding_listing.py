"""Load Embeddings' file list (nodes/embedding_files.py), without ComfyUI: ComfyUI builds it on every /object_info, so
a file's header is read once and again only when the file changes."""

from __future__ import annotations

import importlib
import os

import pytest
import torch
from safetensors.torch import save_file

import arc2face_core.identity.files as identity_files


@pytest.fixture
def listing(pack, monkeypatch):
    module = importlib.import_module(pack.__name__ + ".embedding_files")
    reads = []
    core = importlib.import_module(pack.__name__.rsplit(".", 1)[0] + ".arc2face_core.identity.files")
    real = core.looks_like_identities

    def counted(path):
        reads.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(core, "looks_like_identities", counted)
    getattr(module, "_LISTED", {}).clear()
    return module, reads


def test_headers_are_read_once_and_again_only_when_a_file_changes(listing, tmp_path):
    module, reads = listing
    identity_files.save_embeddings(tmp_path / "people" / "a.safetensors", torch.eye(512)[:2])
    save_file({"weights": torch.zeros(3, 3)}, str(tmp_path / "model.safetensors"))        # not identities
    (tmp_path / "notes.txt").write_text("not a candidate")
    assert module._identity_files(str(tmp_path)) == ["people/a.safetensors"]
    assert sorted(reads) == ["a.safetensors", "model.safetensors"]
    reads.clear()
    assert module._identity_files(str(tmp_path)) == ["people/a.safetensors"]
    assert reads == []                                           # nothing changed: no header opened
    identity_files.save_embeddings(tmp_path / "model.safetensors", torch.eye(512)[:1])   # replaced by identities
    identity_files.save_embeddings(tmp_path / "b.safetensors", torch.eye(512)[:1])
    (tmp_path / "people" / "a.safetensors").unlink()
    assert module._identity_files(str(tmp_path)) == ["b.safetensors", "model.safetensors"]
    assert sorted(reads) == ["b.safetensors", "model.safetensors"]
    assert not any(path.endswith("a.safetensors") for path in getattr(module, "_LISTED", {}))   # forgotten
