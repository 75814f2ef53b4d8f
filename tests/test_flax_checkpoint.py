"""transformers' Flax Whisper format (config.json + flax_model.msgpack), read and written, against
the checked-in checkpoint that transformers 4.57.6 made (tests/fixtures/flax_whisper/, see
scripts/flax_fixture/README.md): its logits, its exact tree, its exact bytes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax.serialization import msgpack_restore, msgpack_serialize

import jaxasr_interp as jai
from jaxasr_interp.cli.main import main as cli
from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.weights import CheckpointError, load_weights
from jaxasr_interp.weights.flax_msgpack import FLAX_INDEX, FLAX_WEIGHTS, flax_tree_from_params, save_flax_dir
from jaxasr_interp.weights.layout import iter_paths

FIXTURE = Path(__file__).parent / "fixtures" / "flax_whisper"
DIMS = Dims(n_mels=13, n_audio_ctx=17, n_audio_state=20, n_audio_head=4, n_audio_layer=2, n_vocab=97,
            n_text_ctx=11, n_text_state=20, n_text_head=4, n_text_layer=3, n_audio_ffn=44, n_text_ffn=52)
TOL = 1e-4


@pytest.fixture(scope="module")
def fixture():
    return load_weights(FIXTURE)


@pytest.fixture(scope="module")
def io():
    return dict(np.load(FIXTURE / "io.npz"))


def same_params(a, b) -> bool:
    fa, fb = dict(iter_paths(a)), dict(iter_paths(b))
    return fa.keys() == fb.keys() and all(np.array_equal(np.asarray(fa[k]), np.asarray(fb[k])) for k in fa)


def logits_of(params, dims, io):
    mel, tokens = jnp.asarray(io["input_features"][0]), jnp.asarray(io["decoder_input_ids"][0])
    logits, _ = jai.forward(params, mel, tokens, dims=dims)
    features, _ = jai.encode(params, mel, dims=dims)
    return np.asarray(logits), np.asarray(features)


def flat_leaves(path: Path) -> dict:
    def walk(tree, prefix=""):
        for k, v in tree.items():
            yield from walk(v, f"{prefix}{k}/") if isinstance(v, dict) else [(f"{prefix}{k}", v)]
    return dict(walk(msgpack_restore(path.read_bytes())))


def checkpoint(tmp_path: Path, tree: dict, config: dict | None = None, name="ckpt") -> Path:
    """A Flax directory holding ``tree`` and the fixture's config.json (or ``config``)."""
    d = tmp_path / name
    d.mkdir()
    cfg = json.loads((FIXTURE / "config.json").read_text()) if config is None else config
    (d / "config.json").write_text(json.dumps(cfg))
    (d / FLAX_WEIGHTS).write_bytes(msgpack_serialize(tree))
    return d


# ----------------------------------------------------------------------------------- reading


def test_fixture_dims_and_logits(fixture, io):
    assert fixture.dims == DIMS and (fixture.dims.n_audio_ffn, fixture.dims.n_text_ffn) == (44, 52)
    assert fixture.tokenizer_file is None
    logits, features = logits_of(fixture.params, fixture.dims, io)
    assert np.abs(logits - io["logits"][0]).max() <= TOL
    assert np.abs(features - io["encoder_last_hidden_state"][0]).max() <= TOL
    assert io["logits"].std() > 0.1  # not a degenerate comparison
    # the stored encoder positions are read, not recomputed (the fixture's are not sinusoids)
    stored = flat_leaves(FIXTURE / FLAX_WEIGHTS)["model/encoder/embed_positions/embedding"]
    assert np.array_equal(fixture.params["encoder"]["positional_embedding"]["embedding"], stored)


def test_file_path_headless_tree_and_shards(fixture, tmp_path):
    assert same_params(load_weights(FIXTURE / FLAX_WEIGHTS).params, fixture.params)
    tree = msgpack_restore((FIXTURE / FLAX_WEIGHTS).read_bytes())
    assert same_params(load_weights(checkpoint(tmp_path, tree["model"], name="headless")).params, fixture.params)
    shards = tmp_path / "sharded"  # transformers' sharded layout: flat "/" names in the index
    shards.mkdir()
    shutil.copy(FIXTURE / "config.json", shards)
    flat = flat_leaves(FIXTURE / FLAX_WEIGHTS)
    names = sorted(flat)
    weight_map = {}
    for i, part in enumerate((names[:50], names[50:])):
        fname = f"flax_model-0000{i + 1}-of-00002.msgpack"
        nested: dict = {}
        for n in part:
            node = nested
            *parents, last = n.split("/")
            for key in parents:
                node = node.setdefault(key, {})
            node[last] = flat[n]
            weight_map[n] = fname
        (shards / fname).write_bytes(msgpack_serialize(nested))
    (shards / FLAX_INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert same_params(load_weights(shards).params, fixture.params)


def test_tied_read_out(fixture, tmp_path):
    tree = msgpack_restore((FIXTURE / FLAX_WEIGHTS).read_bytes())
    emb = tree["model"]["decoder"]["embed_tokens"]["embedding"]
    untied = dict(json.loads((FIXTURE / "config.json").read_text()), tie_word_embeddings=False)
    copy = checkpoint(tmp_path, dict(tree, lm_head={"kernel": emb.T.copy()}), untied, "copy")
    assert same_params(load_weights(copy).params, fixture.params)  # an lm_head equal to the embedding
    other = checkpoint(tmp_path, dict(tree, lm_head={"kernel": emb.T + 1}), untied, "other")
    with pytest.raises(CheckpointError, match="lm_head/kernel differs from the token embedding"):
        load_weights(other)
    with pytest.raises(CheckpointError, match="tie_word_embeddings false but the checkpoint has no lm_head"):
        load_weights(checkpoint(tmp_path, tree, untied, "missing"))


def test_bad_checkpoints_are_clear_errors(tmp_path):
    tree = msgpack_restore((FIXTURE / FLAX_WEIGHTS).read_bytes())
    enc = tree["model"]["encoder"]
    cases = {
        "extra": ({**tree, "model": {**tree["model"], "extra": {"kernel": np.ones(3, np.float32)}}},
                  "unexpected tensors.*extra/kernel"),
        "missing": ({"model": {**tree["model"], "encoder": {k: v for k, v in enc.items() if k != "layer_norm"}}},
                    "missing tensor 'encoder/layer_norm/scale'"),
        "shape": ({"model": {**tree["model"],
                             "encoder": {**enc, "conv2": {**enc["conv2"], "bias": np.ones(7, np.float32)}}}},
                  r"'encoder/conv2/bias' has shape \(7,\), expected \(20,\)"),
        "twice": ({**tree, "encoder": enc}, r"'encoder/conv1/\w+' is stored both under model/ and outside it"),
    }
    for name, (bad, message) in cases.items():
        with pytest.raises(CheckpointError, match=message):
            load_weights(checkpoint(tmp_path, bad, name=name))
    relu = dict(json.loads((FIXTURE / "config.json").read_text()), activation_function="relu")
    with pytest.raises(CheckpointError, match="activation_function 'relu'"):
        load_weights(checkpoint(tmp_path, tree, relu, "relu"))
    corrupt = checkpoint(tmp_path, tree, name="corrupt")
    (corrupt / FLAX_WEIGHTS).write_bytes((FIXTURE / FLAX_WEIGHTS).read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="not a readable Flax msgpack file"):
        load_weights(corrupt)


# ----------------------------------------------------------------------------------- writing


def test_written_tree_and_bytes_equal_transformers(fixture, tmp_path):
    tree = json.loads((FIXTURE / "tree.json").read_text())["leaves"]
    out = save_flax_dir(fixture.params, fixture.dims, tmp_path / "out")
    written = flat_leaves(out / FLAX_WEIGHTS)
    got = [{"path": p, "shape": list(v.shape), "dtype": str(v.dtype)} for p, v in sorted(written.items())]
    assert got == tree
    # the same keys in the same (module-creation) order and the same values: the same bytes
    assert (out / FLAX_WEIGHTS).read_bytes() == (FIXTURE / FLAX_WEIGHTS).read_bytes()
    cfg = json.loads((out / "config.json").read_text())
    want = json.loads((FIXTURE / "config.json").read_text())  # transformers' full config
    assert cfg.pop("tie_word_embeddings") is want.get("tie_word_embeddings", True) is True
    assert {k: want[k] for k in cfg} == cfg
    with pytest.raises(CheckpointError, match="decoder/ln/scale"):
        ln = {"scale": np.ones(3), "bias": np.ones(20)}
        bad = {**fixture.params, "decoder": {**fixture.params["decoder"], "ln": ln}}
        flax_tree_from_params(bad, fixture.dims)


def test_cli_convert_round_trips(fixture, io, tmp_path):
    out = tmp_path / "flax"
    assert cli(["convert", str(FIXTURE), str(out), "--format", "flax"]) == 0
    again = load_weights(out)
    assert again.dims == DIMS and same_params(again.params, fixture.params)
    for got, want in zip(logits_of(again.params, again.dims, io), logits_of(fixture.params, fixture.dims, io)):
        assert np.array_equal(got, want)
    for fmt in ("hf", "orbax"):  # the other formats still work, from a Flax source too
        assert cli(["convert", str(out), str(tmp_path / fmt), "--format", fmt]) == 0
        loaded = load_weights(tmp_path / fmt)
        assert loaded.dims == DIMS and same_params(loaded.params, fixture.params)
    with pytest.raises(SystemExit, match="2"):
        cli(["convert", str(out), str(tmp_path / "x"), "--format", "onnx"])
    assert cli(["convert", str(FIXTURE), str(out), "--format", "flax"]) == 2  # exists, no --overwrite


def test_bundled_model_to_flax_and_back(tmp_path):
    out = tmp_path / "tiny-flax"
    assert cli(["convert", "tiny.en", str(out), "--format", "flax"]) == 0
    assert (out / "tokenizer.json").is_file()
    model, ref = jai.load(out), load_weights("tiny.en")
    assert model.dims == ref.dims and model.tokenizer.eot == 50256
    assert same_params(model.params, ref.params)
