"""Checkpoint formats: bundled CTranslate2 files, synthetic CTranslate2 variants, transformers,
openai .pt, orbax, hub resolution and the dispatcher's errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jaxasr_interp.whisper.config import PRESETS, Dims
from jaxasr_interp.weights import CheckpointError, LoadedWeights, bundled, ct2, hf, known_names, load_weights
from jaxasr_interp.weights.layout import iter_paths, param_shapes
from jaxasr_interp.weights.openai_pt import load_openai_pt, openai_state_dict_from_params, save_openai_pt
from jaxasr_interp.weights.orbax_io import load_params_dir, save_params

# Small, odd sizes so that any mix-up of axes shows as a shape error.
SMALL = Dims(n_mels=7, n_audio_ctx=13, n_audio_state=12, n_audio_head=3, n_audio_layer=2, n_vocab=37,
             n_text_ctx=11, n_text_state=12, n_text_head=2, n_text_layer=3)
# MLP widths that are not 4 x state (transformers' encoder_ffn_dim / decoder_ffn_dim)
SMALL_FFN = SMALL.replace(n_audio_ffn=17, n_text_ffn=29)


def assert_same_params(a, b):
    fa, fb = dict(iter_paths(a)), dict(iter_paths(b))
    assert fa.keys() == fb.keys()
    for k in fa:
        assert np.asarray(fa[k]).dtype == np.float32, k
        assert np.array_equal(np.asarray(fa[k]), np.asarray(fb[k])), k


def random_params(dims: Dims, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out: dict = {}
    for path, shape in iter_paths(param_shapes(dims)):
        node = out
        *parents, last = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = (0.5 * rng.standard_normal(shape)).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def tiny() -> LoadedWeights:
    return load_weights("tiny.en")


@pytest.fixture(scope="module")
def small():
    return random_params(SMALL)


@pytest.fixture(scope="module")
def small_ct2_vars(small):
    return ct2.ct2_variables_from_params(small, SMALL)


def write_small(tmp_path, variables, aliases, name="model.bin", dtype=None) -> Path:
    return ct2.write_ct2(tmp_path / name, variables, aliases=aliases, dtype=dtype)


# ------------------------------------------------------------------------------ bundled files


def test_bundled_tiny_en(tiny):
    assert tiny.dims == PRESETS["tiny.en"]
    d = tiny.dims
    assert (d.n_audio_layer, d.n_text_layer, d.n_audio_state, d.n_audio_head, d.n_vocab, d.n_mels) == \
        (4, 4, 384, 6, 51864, 80)
    assert not d.is_multilingual
    assert tiny.tokenizer_file is not None and tiny.tokenizer_file.name == "tokenizer.json"
    assert tiny.tokenizer_file.is_file()
    assert tiny.source == "tiny.en"
    # The stored encoder positions are openai's sinusoids (stored in float16).
    np.testing.assert_allclose(tiny.params["encoder"]["positional_embedding"]["embedding"], ct2.sinusoids(1500, 384), atol=1e-3)


def test_bundled_base():
    base = load_weights("base")
    assert base.dims == PRESETS["base"]
    d = base.dims
    assert (d.n_audio_layer, d.n_text_layer, d.n_audio_state, d.n_text_head, d.n_vocab) == (6, 6, 512, 8, 51865)
    assert d.is_multilingual
    assert base.tokenizer_file.is_file()
    assert set(known_names()) >= {"tiny.en", "base"}


def test_bundled_sha_mismatch(monkeypatch):
    monkeypatch.setitem(bundled.SHA256, "tiny.en", "0" * 64)
    monkeypatch.setattr(bundled, "_verified", {})
    with pytest.raises(CheckpointError, match="sha256"):
        bundled.load_bundled("tiny.en")


def test_ct2_tiny_matches_transformers(tiny, tmp_path):
    import torch
    from transformers import WhisperForConditionalGeneration
    hf.save_hf_dir(tiny.params, tiny.dims, tmp_path)
    params, dims = hf.load_hf_dir(tmp_path)
    assert dims == tiny.dims
    assert_same_params(params, tiny.params)

    model = WhisperForConditionalGeneration.from_pretrained(str(tmp_path), torch_dtype=torch.float32)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    ours = hf.hf_state_dict_from_params(tiny.params, tiny.dims)
    for name, value in ours.items():
        assert np.array_equal(sd[name], value), name
    p = tiny.params
    assert np.array_equal(sd["model.encoder.layers.2.self_attn.k_proj.weight"],
                          p["encoder"]["blocks"]["attn"]["key"]["kernel"][2].T)
    assert np.array_equal(sd["model.decoder.layers.1.encoder_attn.v_proj.bias"],
                          p["decoder"]["blocks"]["cross_attn"]["value"]["bias"][1])
    assert np.array_equal(sd["model.encoder.conv1.weight"], p["encoder"]["conv1"]["kernel"].transpose(2, 1, 0))
    assert np.array_equal(sd["proj_out.weight"], p["decoder"]["token_embedding"]["embedding"])
    assert "model.encoder.layers.0.self_attn.k_proj.bias" not in sd


def test_split_equals_single(tiny, tmp_path):
    src = bundled.bundled_files("tiny.en")[0][0]
    data = src.read_bytes()
    # Cut inside the header, inside a variable's data, and near the end.
    cuts = [0, 5, 1_000_003, len(data) - 7, len(data)]
    parts = []
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        part = tmp_path / f"model.bin.part{i + 1}"
        part.write_bytes(data[a:b])
        parts.append(part)
    params, dims = ct2.load_ct2(parts)
    assert dims == tiny.dims
    assert_same_params(params, tiny.params)
    # A missing part is a truncation, named as such.
    with pytest.raises(CheckpointError, match="truncated"):
        ct2.load_ct2(parts[:-1])


# ------------------------------------------------------------------------ synthetic CT2 files


@pytest.mark.parametrize("dtype", [None, "float16", "bfloat16", "int8", "int16"])
def test_ct2_dtypes(small, small_ct2_vars, tmp_path, dtype):
    variables, aliases = small_ct2_vars
    path = write_small(tmp_path, variables, aliases, dtype=dtype)
    raw = ct2.read_ct2(path)
    assert raw.spec_name == "WhisperSpec" and raw.binary_version == 6
    if dtype in ("int8", "int16"):
        assert raw.dtypes["decoder/layer_0/ffn/linear_0/weight"] == dtype
        assert "decoder/layer_0/ffn/linear_0/weight_scale" in raw.variables
    elif dtype is not None:
        assert raw.dtypes["decoder/layer_0/ffn/linear_0/weight"] == dtype
    params, dims = ct2.load_ct2(path)
    assert dims == SMALL
    got, want = dict(iter_paths(params)), dict(iter_paths(small))
    global_max = max(np.max(np.abs(v)) for v in want.values())
    for k in want:
        g, w = got[k], want[k]
        assert g.dtype == np.float32 and g.shape == w.shape, k
        if dtype is None:
            assert np.array_equal(g, w), k
        elif dtype == "float16":
            np.testing.assert_allclose(g, w, rtol=2 ** -11, atol=1e-7, err_msg=k)
        elif dtype == "bfloat16":
            np.testing.assert_allclose(g, w, rtol=2 ** -8, atol=1e-30, err_msg=k)
        else:
            # Quantized weights: half a quantization step (int8: of each output row, bounded
            # here by the tensor's max; int16: one scale per stored tensor, which may be a fused
            # [q; k; v], bounded by the max over the model); the rest is stored in float32.
            amax = np.max(np.abs(w)) if dtype == "int8" else global_max
            bound = amax / (254 if dtype == "int8" else 2 ** 11) * 1.001
            assert np.max(np.abs(g - w)) <= bound, k


def test_ct2_missing_encoder_positions_are_sinusoids(small, small_ct2_vars, tmp_path):
    variables, aliases = small_ct2_vars
    variables = dict(variables)
    del variables["encoder/position_encodings/encodings"]
    params, dims = ct2.load_ct2(write_small(tmp_path, variables, aliases))
    assert dims.n_audio_ctx == ct2.WHISPER_N_AUDIO_CTX
    assert np.array_equal(params["encoder"]["positional_embedding"]["embedding"], ct2.sinusoids(1500, SMALL.n_audio_state))


def test_ct2_heads_without_num_heads(small_ct2_vars, tmp_path):
    variables, aliases = small_ct2_vars
    variables = {k: v for k, v in variables.items() if not k.endswith("num_heads")}
    path = write_small(tmp_path, variables, aliases)
    _, dims = ct2.load_ct2(path, config={"encoder_attention_heads": 3, "decoder_attention_heads": 2})
    assert (dims.n_audio_head, dims.n_text_head) == (3, 2)
    _, dims = ct2.load_ct2(path)  # Whisper's 64-dimensional heads: at least one head
    assert (dims.n_audio_head, dims.n_text_head) == (1, 1)


def test_ct2_truncated(small_ct2_vars, tmp_path):
    variables, aliases = small_ct2_vars
    data = write_small(tmp_path, variables, aliases).read_bytes()
    bad = tmp_path / "bad.bin"
    for cut in (0, 3, 9, 40, len(data) // 2, len(data) - 30, len(data) - 1):
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as e:
            ct2.load_ct2(bad)
        assert str(bad) in str(e.value)
        assert ("truncated" in str(e.value)) or (cut == 0 and "empty" in str(e.value)), str(e.value)
    bad.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated.*variable \d+ '[a-z_0-9/]+'"):
        ct2.load_ct2(bad)
    bad.write_bytes(data + b"\0\0")
    with pytest.raises(CheckpointError, match="unexpected bytes"):
        ct2.load_ct2(bad)


def test_ct2_corrupt_bytes_never_crash(small_ct2_vars, tmp_path):
    variables, aliases = small_ct2_vars
    path = write_small(tmp_path, variables, aliases)
    data = bytearray(path.read_bytes())
    want_params, want_dims = ct2.load_ct2(path)
    want = {k: np.asarray(v) for k, v in iter_paths(want_params)}
    outcomes = {"refused": 0, "loaded": 0, "changed": 0}
    rng = np.random.default_rng(1)
    bad = tmp_path / "bad.bin"
    for _ in range(60):
        corrupt = bytearray(data)
        # Mostly in the header and the first variables' metadata, where bytes are structural.
        pos = int(rng.integers(0, 2000 if rng.random() < 0.8 else len(data)))
        corrupt[pos] = int(rng.integers(0, 256))
        bad.write_bytes(bytes(corrupt))
        try:
            params, dims = ct2.load_ct2(bad)
        except CheckpointError:
            outcomes["refused"] += 1
            continue
        # a load that succeeds can only be a changed value inside one stored array (the format
        # has no checksum): same dims, same tree and shapes, at most one element differs
        outcomes["loaded"] += 1
        assert dims == want_dims
        got = dict(iter_paths(params))
        assert got.keys() == want.keys()
        assert all(np.shape(got[k]) == np.shape(want[k]) for k in want)
        changed = sum(int(np.sum(~np.isclose(np.asarray(got[k]), want[k], equal_nan=True))) for k in want)
        outcomes["changed"] += changed > 0
        assert changed <= 1, (pos, changed)
    # both branches happened, and some silent loads did change a value (the check above bites)
    assert outcomes["refused"] >= 5 and outcomes["loaded"] >= 10 and outcomes["changed"] >= 1, outcomes
    bad.write_bytes(b"not a model at all, just text\n" * 3)
    with pytest.raises(CheckpointError):
        ct2.load_ct2(bad)


def test_ct2_extra_missing_misshaped(small_ct2_vars, tmp_path):
    variables, aliases = small_ct2_vars

    def load_with(changes=(), drop=(), new_aliases=None):
        v = {k: val for k, val in variables.items() if k not in drop}
        v.update(dict(changes))
        return ct2.load_ct2(write_small(tmp_path, v, aliases if new_aliases is None else new_aliases))

    with pytest.raises(CheckpointError, match="decoder/extra/weight"):
        load_with({"decoder/extra/weight": np.ones((3, 3), np.float32)})
    with pytest.raises(CheckpointError, match="decoder/layer_1/ffn/linear_0/bias"):
        load_with(drop=["decoder/layer_1/ffn/linear_0/bias"])
    with pytest.raises(CheckpointError, match="encoder/layer_0/ffn/linear_1/weight"):
        load_with({"encoder/layer_0/ffn/linear_1/weight": np.ones((12, 47), np.float32)})
    with pytest.raises(CheckpointError, match="decoder/layer_2/self_attention/linear_0/weight"):
        load_with({"decoder/layer_2/self_attention/linear_0/weight": np.ones((35, 12), np.float32)})
    with pytest.raises(CheckpointError, match="decoder/layer_0/ffn/linear_0/weight_scale"):
        load_with({"decoder/layer_0/ffn/linear_0/weight_scale": np.ones(48, np.float32)})
    with pytest.raises(CheckpointError, match="unexpected tensors.*decoder/rms_norm"):
        load_with({"decoder/rms_norm": np.int8(1)})
    with pytest.raises(CheckpointError, match="decoder/activation"):
        load_with({"decoder/activation": np.int8(0)})  # ReLU
    with pytest.raises(CheckpointError, match="decoder/layer_2"):  # a layer index gap
        load_with(drop=[k for k in variables if k.startswith("decoder/layer_2/")],
                  changes={k.replace("layer_2", "layer_3"): v for k, v in variables.items()
                           if k.startswith("decoder/layer_2/")})
    # An untied output projection, stored as a real tensor.
    emb = variables["decoder/embeddings/weight"]
    with pytest.raises(CheckpointError, match="decoder/projection/weight"):
        load_with({"decoder/projection/weight": emb + 1}, new_aliases={})
    # A tied one stored as a copy is accepted.
    params, _ = load_with({"decoder/projection/weight": emb.copy()}, new_aliases={})
    assert np.array_equal(params["decoder"]["token_embedding"]["embedding"], emb)


@pytest.mark.parametrize("name, rows", [("encoder/layer_1/self_attention/linear_0/bias", slice(12, 24)),
                                        ("decoder/layer_0/self_attention/linear_0/bias", slice(12, 24)),
                                        ("decoder/layer_2/attention/linear_1/bias", slice(0, 12))])
def test_ct2_nonzero_key_bias(small_ct2_vars, tmp_path, name, rows):
    variables, aliases = small_ct2_vars
    variables = dict(variables)
    bias = variables[name].copy()
    bias[rows][3] = 0.25
    variables[name] = bias
    with pytest.raises(CheckpointError, match=f"{name}.*nonzero key bias"):
        ct2.load_ct2(write_small(tmp_path, variables, aliases))


def test_ct2_dir_dispatch(small, small_ct2_vars, tmp_path, tiny):
    variables, aliases = small_ct2_vars
    path = write_small(tmp_path, variables, aliases)
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "config.json").write_text(json.dumps({"alignment_heads": [[1, 0]]}))
    for source in (tmp_path, path, str(path)):
        loaded = load_weights(source)
        assert loaded.dims == SMALL
        assert loaded.tokenizer_file == tmp_path / "tokenizer.json"
        assert_same_params(loaded.params, small)


# --------------------------------------------------------------------------------- transformers


def _write_sharded_safetensors(sd, directory: Path):
    from safetensors.numpy import save_file
    names = sorted(sd)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for fname, keys in shards.items():
        save_file({k: sd[k] for k in keys}, str(directory / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in keys})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("kind", ["safetensors", "sharded_safetensors", "torch_bin", "tied_proj_out"])
def test_hf_round_trip(small, tmp_path, kind):
    import torch
    d = tmp_path / kind
    d.mkdir()
    (d / "config.json").write_text(json.dumps(hf.hf_config_from_dims(SMALL)))
    sd = hf.hf_state_dict_from_params(small, SMALL)
    if kind == "safetensors":
        hf.save_hf_dir(small, SMALL, d)
    elif kind == "sharded_safetensors":
        _write_sharded_safetensors(sd, d)
    elif kind == "torch_bin":
        torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, str(d / "pytorch_model.bin"))
    else:
        from safetensors.numpy import save_file
        save_file(dict(sd, **{"proj_out.weight": sd["model.decoder.embed_tokens.weight"]}),
                  str(d / "model.safetensors"))
    loaded = load_weights(d)
    assert loaded.dims == SMALL and loaded.tokenizer_file is None
    assert_same_params(loaded.params, small)
    if kind == "torch_bin":  # the .bin file itself points at its directory
        assert_same_params(load_weights(d / "pytorch_model.bin").params, small)


def test_hf_extra_tensor_refused(small, tmp_path):
    from safetensors.numpy import save_file
    (tmp_path / "config.json").write_text(json.dumps(hf.hf_config_from_dims(SMALL)))
    sd = hf.hf_state_dict_from_params(small, SMALL)
    sd["model.encoder.layers.0.self_attn.k_proj.bias"] = np.zeros(12, np.float32)
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="k_proj.bias"):
        load_weights(tmp_path)


# ------------------------------------------------------------------------------ openai .pt


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_openai_pt_round_trip(small, tmp_path):
    path = save_openai_pt(small, SMALL, tmp_path / "small.pt")
    loaded = load_weights(path)
    assert loaded.dims == SMALL and loaded.tokenizer_file is None
    assert_same_params(loaded.params, small)
    # float16, as openai ships them.
    params, _ = load_openai_pt(save_openai_pt(small, SMALL, tmp_path / "small16.pt", dtype="float16"))
    for k, v in iter_paths(small):
        np.testing.assert_allclose(dict(iter_paths(params))[k], v, rtol=2 ** -11, atol=1e-7)


def test_openai_pt_names_and_refusals(small, tmp_path):
    import dataclasses

    import torch
    sd = {k: torch.from_numpy(v) for k, v in openai_state_dict_from_params(small, SMALL).items()}
    assert "encoder.blocks.1.attn.query.weight" in sd and "decoder.blocks.2.cross_attn.key.weight" in sd
    assert "decoder.blocks.0.mlp.2.bias" in sd and "encoder.blocks.0.attn.key.bias" not in sd
    dims = dataclasses.asdict(SMALL)

    # No encoder.positional_embedding buffer: recomputed sinusoids.
    no_pos = {k: v for k, v in sd.items() if k != "encoder.positional_embedding"}
    torch.save({"dims": dims, "model_state_dict": no_pos}, str(tmp_path / "nopos.pt"))
    params, _ = load_openai_pt(tmp_path / "nopos.pt")
    assert np.array_equal(params["encoder"]["positional_embedding"]["embedding"], ct2.sinusoids(13, 12))

    extra = dict(sd, **{"decoder.blocks.0.attn.key.bias": torch.zeros(12)})
    torch.save({"dims": dims, "model_state_dict": extra}, str(tmp_path / "extra.pt"))
    with pytest.raises(CheckpointError, match="decoder.blocks.0.attn.key.bias"):
        load_openai_pt(tmp_path / "extra.pt")

    marker = tmp_path / "code_ran"
    torch.save({"dims": dims, "model_state_dict": sd, "payload": _RunsCode(str(marker))}, str(tmp_path / "evil.pt"))
    with pytest.raises(CheckpointError, match="refused.*not a weights-only checkpoint"):
        load_weights(tmp_path / "evil.pt")
    assert not marker.exists()

    (tmp_path / "garbage.pt").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_weights(tmp_path / "garbage.pt")


# ------------------------------------------------------------------------------------ orbax


def test_orbax_round_trip(small, tmp_path, tiny):
    out = save_params(small, SMALL, tmp_path / "ckpt", tokenizer_file=tiny.tokenizer_file)
    params, dims = load_params_dir(out)
    assert dims == SMALL
    assert_same_params(params, small)
    for _, v in iter_paths(params):
        assert isinstance(v, np.ndarray)
    loaded = load_weights(tmp_path / "ckpt")
    assert loaded.tokenizer_file == out / "tokenizer.json"
    assert (out / "tokenizer.json").read_bytes() == tiny.tokenizer_file.read_bytes()
    assert_same_params(loaded.params, small)
    with pytest.raises(CheckpointError, match="exists"):
        save_params(small, SMALL, out)
    bad = dict(small, decoder=dict(small["decoder"], ln={"scale": np.ones(5, np.float32),
                                                         "bias": np.zeros(12, np.float32)}))
    with pytest.raises(CheckpointError, match="decoder/ln/scale"):
        save_params(bad, SMALL, tmp_path / "bad")


# ---------------------------------------------------------------------------- FFN widths


def test_dims_ffn_defaults_and_from_params():
    assert (SMALL.n_audio_ffn, SMALL.n_text_ffn) == (48, 48)  # the default: 4 x state, resolved
    spelled = Dims(**{f: getattr(SMALL, f) for f in ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head",
                                                     "n_audio_layer", "n_vocab", "n_text_ctx", "n_text_state",
                                                     "n_text_head", "n_text_layer")}, n_audio_ffn=48, n_text_ffn=48)
    assert spelled == SMALL and hash(spelled) == hash(SMALL) and SMALL_FFN != SMALL
    assert all(d.n_audio_ffn == 4 * d.n_audio_state and d.n_text_ffn == 4 * d.n_text_state for d in PRESETS.values())
    with pytest.raises(ValueError, match="n_text_ffn must be a positive int"):
        SMALL.replace(n_text_ffn=-1)
    for dims in (SMALL, SMALL_FFN):
        assert Dims.from_params(random_params(dims), dims.n_audio_head, dims.n_text_head) == dims
    shapes = param_shapes(SMALL_FFN)
    assert shapes["encoder"]["blocks"]["mlp1"]["kernel"] == (2, 12, 17)
    assert shapes["decoder"]["blocks"]["mlp2"]["kernel"] == (3, 29, 12)


def test_ffn_widths_through_every_format(tmp_path):
    """Each reader takes the FFN widths from the checkpoint: config.json (transformers), tensor
    shapes (CTranslate2, openai .pt) or dims.json (orbax)."""
    import dataclasses

    import torch
    params = random_params(SMALL_FFN, seed=3)
    variables, aliases = ct2.ct2_variables_from_params(params, SMALL_FFN)
    hf.save_hf_dir(params, SMALL_FFN, tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (cfg["encoder_ffn_dim"], cfg["decoder_ffn_dim"]) == (17, 29)
    save_params(params, SMALL_FFN, tmp_path / "orbax")
    openai_dims = {k: v for k, v in dataclasses.asdict(SMALL_FFN).items() if not k.endswith("_ffn")}
    sd = {k: torch.from_numpy(v) for k, v in openai_state_dict_from_params(params, SMALL_FFN).items()}
    torch.save({"dims": openai_dims, "model_state_dict": sd}, str(tmp_path / "ffn.pt"))
    for source in (write_small(tmp_path, variables, aliases), tmp_path / "hf", tmp_path / "orbax", tmp_path / "ffn.pt"):
        loaded = load_weights(source)
        assert loaded.dims == SMALL_FFN, source
        assert_same_params(loaded.params, params)
    with pytest.raises(ValueError, match="4 \\* state"):  # openai/whisper could not load it
        save_openai_pt(params, SMALL_FFN, tmp_path / "refused.pt")
    # openai's own dims (no FFN fields) in what save_openai_pt writes, so that whisper.load_model reads it
    save_openai_pt(random_params(SMALL), SMALL, tmp_path / "plain.pt")
    assert set(torch.load(str(tmp_path / "plain.pt"), weights_only=True)["dims"]) == set(openai_dims)


def test_orbax_dims_file_without_ffn_fields_still_loads(small, tmp_path):
    out = save_params(small, SMALL, tmp_path / "old")
    raw = json.loads((out / "dims.json").read_text())
    assert (raw["n_audio_ffn"], raw["n_text_ffn"]) == (48, 48)
    (out / "dims.json").write_text(json.dumps({k: v for k, v in raw.items() if not k.endswith("_ffn")}))
    params, dims = load_params_dir(out)
    assert dims == SMALL
    assert_same_params(params, small)


# -------------------------------------------------------------------------------------- hub


def test_hub_offline_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(CheckpointError) as e:
        load_weights("openai/whisper-large-v3")
    msg = str(e.value)
    assert msg == ("model openai/whisper-large-v3 is not in the Hugging Face cache and the hub cannot be reached; "
                   "download it on a connected machine (huggingface-cli download openai/whisper-large-v3) "
                   "or pass a local directory")
    assert "\n" not in msg


def test_hub_from_cache(small, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--someone--whisper-small-test"
    snapshot = repo / "snapshots" / commit
    hf.save_hf_dir(small, SMALL, snapshot)
    (snapshot / "tokenizer.json").write_text("{}")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    loaded = load_weights("someone/whisper-small-test")
    assert loaded.source == "someone/whisper-small-test"
    assert loaded.dims == SMALL
    assert loaded.tokenizer_file == snapshot / "tokenizer.json"
    assert_same_params(loaded.params, small)


# ------------------------------------------------------------------------------ dispatcher


def test_unknown_names(tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_weights("xyz")
    assert str(e.value) == ("unknown model 'xyz': expected one of tiny.en, base, a local directory, a .pt file, "
                            "a model.bin or a Hugging Face hub id like openai/whisper-tiny")
    with pytest.raises(CheckpointError, match="no such file or directory"):
        load_weights(str(tmp_path / "nothing" / "model.bin"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        load_weights(tmp_path / "empty")
    (tmp_path / "weights.npz").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown model"):
        load_weights(tmp_path / "weights.npz")
