"""The ID encoder against an independent computation with transformers' CLIPTextModel.

Independent route: Arc2Face replaces the token embedding of the "id" token (which appears once, at position 4) by
the padded ArcFace vector. Writing that vector into row 1014 of the embedding table of transformers' own
CLIPTextModel and running its unmodified forward on the token ids is the same computation, done by other code
(transformers' loader, causal mask, attention and pooling).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from arc2face_core.errors import CorruptWeightsError, InvalidInputError, WeightsNotFoundError
from arc2face_core.identity import prompt_tokens as tok
from arc2face_core.identity.encoder import find_id_encoder, load_id_encoder
from builders.clip_encoder import write_encoder
from numerics import ulps

transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hf_clip(encoder_root):
    model = transformers.CLIPTextModel.from_pretrained(encoder_root / "encoder")
    return model.eval()


def reference_positive(hf_model, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ids = tok.padded_ids(tok.PSEUDO_PROMPT_IDS).unsqueeze(0)
    table = hf_model.embeddings.token_embedding.weight
    original = table[tok.ID_TOKEN].clone()
    hidden, pooled = [], []
    with torch.no_grad():
        try:
            for row in embeds / embeds.norm(dim=1, keepdim=True):
                table[tok.ID_TOKEN] = F.pad(row, (0, table.shape[1] - row.shape[0]))
                out = hf_model(input_ids=ids)
                hidden.append(out.last_hidden_state[0])
                pooled.append(out.pooler_output[0])
        finally:
            table[tok.ID_TOKEN] = original
    return torch.stack(hidden), torch.stack(pooled)


def unit_rows(n: int, seed: int) -> torch.Tensor:
    x = torch.randn(n, 512, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=1, keepdim=True)


def test_positive_matches_transformers_for_a_batch(id_encoder, hf_clip):
    embeds = unit_rows(4, seed=1)
    positive, pooled = id_encoder.encode(embeds)
    ref_hidden, ref_pooled = reference_positive(hf_clip, embeds)
    assert positive.shape == (4, 77, 768) and positive.dtype == torch.float32
    torch.testing.assert_close(positive, ref_hidden, atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled, ref_pooled, atol=1e-5, rtol=0)


def test_negative_is_the_encoder_on_the_empty_prompt(id_encoder, hf_clip):
    negative, pooled = id_encoder.encode_empty()
    with torch.no_grad():
        out = hf_clip(input_ids=tok.padded_ids(tok.EMPTY_PROMPT_IDS).unsqueeze(0))
    assert negative.shape == (1, 77, 768)
    torch.testing.assert_close(negative, out.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled, out.pooler_output, atol=1e-5, rtol=0)
    assert negative.abs().mean() > 0.1  # not zeros


def test_batch_rows_equal_single_runs(id_encoder):
    embeds = unit_rows(3, seed=2)
    batched, _ = id_encoder.encode(embeds)
    for i in range(3):
        single, _ = id_encoder.encode(embeds[i:i + 1])
        torch.testing.assert_close(batched[i:i + 1], single, atol=1e-6, rtol=0)
    assert (batched[0] - batched[1]).abs().max() > 1e-3  # different people, different conditioning


def test_id_row_is_the_zero_padded_vector(id_encoder):
    embeds = unit_rows(2, seed=3)
    rows = id_encoder.identity_token_embeddings(embeds)
    assert rows.shape == (2, 77, 768)
    torch.testing.assert_close(rows[:, tok.ID_POSITION, :512], embeds)
    assert torch.count_nonzero(rows[:, tok.ID_POSITION, 512:]) == 0
    table = id_encoder.text_model.embeddings.token_embedding.weight
    ids = tok.padded_ids(tok.PSEUDO_PROMPT_IDS)
    keep = [i for i in range(77) if i != tok.ID_POSITION]
    torch.testing.assert_close(rows[0, keep], table[ids[keep]])


def test_rows_are_renormalised_before_projection(id_encoder):
    embeds = unit_rows(1, seed=4)
    a, _ = id_encoder.encode(embeds)
    b, _ = id_encoder.encode(embeds * 3.7)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(1, 512), "zero vector"),
    (torch.full((1, 512), float("nan")), "NaN"),
    (torch.randn(2, 768), r"\[N, 512\]"),
    (torch.randn(1, 77, 768), "CONDITIONING"),
    (torch.empty(0, 512), "empty batch"),
])
def test_bad_embeds_are_refused(id_encoder, bad, message):
    with pytest.raises(InvalidInputError, match=message):
        id_encoder.encode(bad)


def test_safetensors_and_pickle_give_the_same_encoder(tmp_path, id_encoder):
    path = write_encoder(tmp_path, fmt="safetensors")   # same seed as the session encoder
    other = load_id_encoder(path)
    embeds = unit_rows(2, seed=5)
    torch.testing.assert_close(other.encode(embeds)[0], id_encoder.encode(embeds)[0], atol=0, rtol=0)


def test_safetensors_is_preferred_when_both_exist(tmp_path):
    write_encoder(tmp_path, fmt="bin", seed=1)
    write_encoder(tmp_path, fmt="safetensors", seed=1)
    weights, config = find_id_encoder([tmp_path])
    assert weights.name == "model.safetensors" and config == tmp_path / "encoder" / "config.json"


def test_missing_config_is_derived_from_the_weights(tmp_path, id_encoder):
    path = write_encoder(tmp_path)
    (path.parent / "config.json").unlink()
    derived = load_id_encoder(path)
    assert derived.config.num_hidden_layers == 2 and derived.config.num_attention_heads == 12
    embeds = unit_rows(1, seed=6)
    torch.testing.assert_close(derived.encode(embeds)[0], id_encoder.encode(embeds)[0], atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_load(encoder_root, hf_clip, dtype):
    """Loaded in half precision, the encoder computes in it: within one unit in the last place of transformers'
    CLIPTextModel computing in that dtype (the same maths), and several units from the float32 maths (so the
    comparison tells the dtypes apart; a tolerance loose enough for both would pass on a wrong dtype path)."""
    half = load_id_encoder(encoder_root / "encoder" / "pytorch_model.bin", dtype=dtype)
    reference = transformers.CLIPTextModel.from_pretrained(encoder_root / "encoder", torch_dtype=dtype).eval()
    embeds = unit_rows(2, seed=7)
    out, _ = half.encode(embeds)
    assert out.dtype == dtype
    same_maths, _ = reference_positive(reference, embeds)
    float_maths, _ = reference_positive(hf_clip, embeds)
    assert ulps(out, same_maths, dtype) <= 1.0
    assert ulps(out, float_maths, dtype) > 2.0


def test_a_missing_tensor_is_an_error_not_a_silent_random_weight(tmp_path):
    path = write_encoder(tmp_path)
    sd = torch.load(path, weights_only=True)
    del sd["text_model.encoder.layers.1.mlp.fc2.weight"]
    torch.save(sd, path)
    with pytest.raises(CorruptWeightsError, match=r"missing 1 tensors.*layers\.1\.mlp\.fc2\.weight"):
        load_id_encoder(path)


def test_an_unexpected_tensor_is_an_error(tmp_path):
    path = write_encoder(tmp_path)
    sd = torch.load(path, weights_only=True)
    sd["text_projection.weight"] = torch.zeros(768, 768)
    torch.save(sd, path)
    with pytest.raises(CorruptWeightsError, match="unexpected 1"):
        load_id_encoder(path)


def test_config_that_does_not_fit_the_weights(tmp_path):
    path = write_encoder(tmp_path)
    cfg = path.parent / "config.json"
    cfg.write_text(cfg.read_text().replace('"intermediate_size": 128', '"intermediate_size": 3072'))
    with pytest.raises(CorruptWeightsError, match="does not fit config.json"):
        load_id_encoder(path)


def test_nan_in_the_weights_is_refused(tmp_path):
    path = write_encoder(tmp_path)
    sd = torch.load(path, weights_only=True)
    sd["text_model.final_layer_norm.bias"][3] = float("nan")
    torch.save(sd, path)
    with pytest.raises(CorruptWeightsError, match="final_layer_norm.bias.*NaN"):
        load_id_encoder(path)


def test_only_the_token_rows_the_encoder_reads_are_checked(tmp_path, id_encoder):
    """The encoder looks up 7 ids of its 49,408-row table (photo of a id person, BOS, EOS): a NaN in any other row
    cannot reach an output, and leaving those rows unread keeps them out of memory. A NaN in a used row is refused."""
    path = write_encoder(tmp_path)
    sd = torch.load(path, weights_only=True)
    key = "text_model.embeddings.token_embedding.weight"
    sd[key][30000] = float("nan")                                    # "id" is 1014, BOS 49406, EOS 49407
    torch.save(sd, path)
    loaded = load_id_encoder(path)
    embeds = F.normalize(torch.randn(2, 512, generator=torch.Generator().manual_seed(3)), dim=1)
    torch.testing.assert_close(loaded.encode(embeds)[0], id_encoder.encode(embeds)[0], atol=0, rtol=0)
    torch.testing.assert_close(loaded.encode_empty()[0], id_encoder.encode_empty()[0], atol=0, rtol=0)
    for row in (1014, 2533, 49406):                                   # "id" (its row is replaced, yet read), person, BOS
        sd[key][30000] = 0.0
        sd[key][row, 5] = float("inf")
        torch.save(sd, path)
        with pytest.raises(CorruptWeightsError, match=r"token_embedding\.weight \(rows .*\).*NaN or infinite"):
            load_id_encoder(path)
        sd[key][row, 5] = 0.0


def test_missing_encoder_names_file_folders_and_source(tmp_path):
    roots = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(WeightsNotFoundError) as err:
        find_id_encoder(roots)
    text = str(err.value)
    assert "encoder/pytorch_model.bin" in text and str(roots[0]) in text and str(roots[1]) in text
    assert "https://huggingface.co/FoivosPar/Arc2Face" in text


def test_encoder_found_in_the_second_root(tmp_path, encoder_root):
    other = tmp_path / "extra"
    shutil.copytree(encoder_root / "encoder", other / "encoder")
    weights, _ = find_id_encoder([tmp_path / "empty", other])
    assert weights == other / "encoder" / "pytorch_model.bin"


_LOAD_AND_REPORT_DYNAMO = """
import sys, torch
before = "torch._dynamo" in sys.modules
from arc2face_core.identity.encoder import load_id_encoder
load_id_encoder(sys.argv[1], operations=torch.nn if sys.argv[2] == "torch.nn" else None)
print(before, "torch._dynamo" in sys.modules)
"""


@pytest.mark.parametrize("operations, imports_dynamo", [("default", False), ("torch.nn", True)])
def test_loading_does_not_pull_in_torch_compile(encoder_root, operations, imports_dynamo):
    """Building the tower with torch.nn's own init on the meta device imports torch._dynamo (seconds, hundreds of
    MiB; the torch.nn row is the control that shows it); the default loader skips that init."""
    out = subprocess.run([sys.executable, "-c", _LOAD_AND_REPORT_DYNAMO,
                          str(encoder_root / "encoder" / "pytorch_model.bin"), operations],
                         capture_output=True, text=True, check=True, cwd=REPO)
    before, after = out.stdout.split()
    assert before == "False" and after == str(imports_dynamo)
