"""Activation store: only audio frames (encoder) and transcript tokens (decoder) are stored, and
their values are the captured ones; an interrupted store resumes to the uninterrupted one;
subsampling and shuffling are deterministic by seed; splicing a perfect reconstruction back
into the model changes nothing."""

import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from jaxasr_interp.probes.features import audio_positions
from jaxasr_interp.sae import SAEConfig, splice_cost
from jaxasr_interp.sae import store as store_module
from jaxasr_interp.sae.store import ActivationStore, write_activations
from jaxasr_interp.whisper.api import Model, default_tokenizer_file
from jaxasr_interp.whisper.audio import load_audio, log_mel
from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.whisper.model import decode, encode
from jaxasr_interp.whisper.tokenizer import WhisperTokenizer
from jaxasr_interp.weights.layout import param_shapes

# as tests/test_features.py: the audio context stays 1500, the rest tiny and prime-sized
DIMS = Dims(n_mels=80, n_audio_ctx=1500, n_audio_state=14, n_audio_head=2, n_audio_layer=2,
            n_vocab=51864, n_text_ctx=24, n_text_state=14, n_text_head=2, n_text_layer=3)


def _random_params(dims, seed):
    import jax
    leaves, tree = jax.tree_util.tree_flatten(param_shapes(dims), is_leaf=lambda s: isinstance(s, tuple))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_unflatten(tree, [jnp.asarray(0.3 * rng.standard_normal(s), jnp.float32) for s in leaves])


@pytest.fixture(scope="module")
def model():
    tok = WhisperTokenizer.from_file(default_tokenizer_file(DIMS), multilingual=False)
    return Model(_random_params(DIMS, seed=3), DIMS, tok, "random-test-model")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate((0.7, 1.3, 0.4, 1.0, 0.5)):
        path = folder / f"clip{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def encoder_store(model, clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "enc"
    write_activations(model, clips, out, sites=("encoder.resid_post", "encoder.attn.z"), layers=(1,),
                      chunk_size=2, progress=False)
    return ActivationStore(out)


def test_encoder_rows_are_the_audio_frames_only(model, clips, encoder_store):
    n_valid = [audio_positions(load_audio(c).size, DIMS.n_audio_ctx) for c in clips]
    assert encoder_store.n_shards == 3 and encoder_store.layers == [1]
    assert encoder_store.n_rows == sum(n_valid) == 35 + 65 + 20 + 50 + 25
    clip, pos, acts, z = [], [], [], []
    for i in range(encoder_store.n_shards):
        shard = encoder_store.shard(i)
        clip.append(shard["clip"]), pos.append(shard["pos"]), acts.append(shard["acts"])
        z.append(encoder_store.shard(i, "encoder.attn.z")["acts"])
    clip, pos, acts, z = np.concatenate(clip), np.concatenate(pos), np.concatenate(acts, 1), np.concatenate(z, 1)
    for c, n in enumerate(n_valid):  # every audio position once, no padding position
        assert sorted(pos[clip == c]) == list(range(n))
    assert acts.shape == (1, sum(n_valid), 14) and z.shape == (1, sum(n_valid), 14)  # z flattened H * dh
    _, want = encode(model.params, log_mel(load_audio(clips[1])), dims=DIMS,
                     capture=("encoder.resid_post", "encoder.attn.z"))
    rows = np.flatnonzero(clip == 1)
    np.testing.assert_allclose(acts[0, rows], np.asarray(want["encoder.resid_post"][1])[pos[rows]], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(z[0, rows], np.asarray(want["encoder.attn.z"][1]).reshape(1500, -1)[pos[rows]],
                               rtol=1e-5, atol=1e-5)


def test_interrupted_store_resumes_to_the_uninterrupted_one(model, clips, tmp_path, monkeypatch):
    kw = dict(sites=("encoder.resid_mid",), keep=0.5, seed=7, chunk_size=2, progress=False)
    write_activations(model, clips, tmp_path / "whole", **kw)
    calls, original = [], store_module._chunk_rows

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("interrupted")
        return original(*args, **kwargs)

    monkeypatch.setattr(store_module, "_chunk_rows", failing)
    with pytest.raises(KeyboardInterrupt):
        write_activations(model, clips, tmp_path / "resumed", **kw)
    with pytest.raises(ValueError, match="incomplete"):
        ActivationStore(tmp_path / "resumed")
    monkeypatch.setattr(store_module, "_chunk_rows", original)
    write_activations(model, clips, tmp_path / "resumed", **kw)
    whole, resumed = ActivationStore(tmp_path / "whole"), ActivationStore(tmp_path / "resumed")
    for i in range(whole.n_shards):
        a, b = whole.shard(i), resumed.shard(i)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    n_valid = [audio_positions(load_audio(c).size, DIMS.n_audio_ctx) for c in clips]
    assert whole.n_rows == sum(max(1, round(0.5 * n)) for n in n_valid)
    with pytest.raises(ValueError, match="another activation store"):
        write_activations(model, clips, tmp_path / "whole", **{**kw, "seed": 8})


def test_batches_are_shuffled_deterministically_by_seed(encoder_store):
    first = [b.copy() for b in encoder_store.batches(16, seed=0)]
    again = [b.copy() for b in encoder_store.batches(16, seed=0)]
    other = [b.copy() for b in encoder_store.batches(16, seed=1)]
    assert len(first) == encoder_store.n_rows // 16 and first[0].shape == (1, 16, 14)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    every = np.concatenate(list(encoder_store.batches(16, seed=1, drop_last=False)), axis=1)
    stored = np.concatenate([encoder_store.shard(i)["acts"] for i in range(3)], axis=1)
    np.testing.assert_array_equal(np.sort(every, axis=1), np.sort(stored, axis=1))  # each row once
    assert len(set(encoder_store.shard(0)["clip"][:8])) == 2  # a shard's clips are interleaved


def test_decoder_rows_are_the_transcript_tokens(model, clips, tmp_path):
    write_activations(model, clips[:2], tmp_path / "dec", sites=("decoder.resid_post",), chunk_size=2,
                      progress=False)
    store = ActivationStore(tmp_path / "dec")
    shard = store.shard(0)
    tok = model.tokenizer
    prompt = tok.prompt()
    from jaxasr_interp.sae.store import _greedy
    mels = jnp.stack([log_mel(load_audio(c)) for c in clips[:2]])
    af, ids = _greedy(model.params, mels, jnp.asarray(prompt, jnp.int32), tok.eot, dims=DIMS, max_new_tokens=12)
    for c in range(2):
        row = np.asarray(ids[c]).tolist()
        n = row.index(tok.eot) if tok.eot in row else len(row)
        mine = shard["clip"] == c
        assert sorted(shard["pos"][mine]) == list(range(len(prompt) - 1, len(prompt) + n))
        tokens = jnp.asarray(prompt + row[:n] + [tok.eot])
        _, acts = decode(model.params, tokens, af[c], dims=DIMS, capture=("decoder.resid_post",))
        np.testing.assert_allclose(shard["acts"][:, mine], np.asarray(acts["decoder.resid_post"])[:, shard["pos"][mine]],
                                   rtol=1e-4, atol=1e-5)


def _identity_sae(d, scale_dec=1.0):
    """A TopK SAE that reconstructs exactly: latents relu(x) and relu(-x), k = d."""
    eye = np.eye(d, dtype=np.float32)
    params = {"W_enc": np.concatenate([eye, -eye], 1), "b_enc": np.zeros(2 * d, np.float32),
              "W_dec": scale_dec * np.concatenate([eye, -eye], 0), "b_dec": np.zeros(d, np.float32)}
    return params, SAEConfig(d, 2 * d, "topk", k=d)


def test_splicing_a_perfect_reconstruction_changes_nothing(model, clips):
    """Encoder site: an SAE that reconstructs exactly at layer 1, one that outputs zeros at
    layer 0 (the same compiled program: the layer is data)."""
    rows = splice_cost(model, clips[:3], {1: _identity_sae(14), 0: _identity_sae(14, 0.0)},
                       site="encoder.resid_post", batch_size=2, max_new_tokens=6)
    identity, zeros = sorted(rows, key=lambda r: -r["layer"])
    assert identity["layer"] == 1 and identity["delta_ce"] == 0.0 and identity["wer"] == 0.0
    assert identity["ce_clean"] == zeros["ce_clean"] > 0
    assert zeros["delta_ce"] != 0.0  # replacing with zeros does change the model


def test_decoder_splice_of_the_clean_activation_changes_nothing(model, clips):
    """Decoder site, live splice during greedy decoding: replacing with the clean value itself."""
    (row,) = splice_cost(model, clips[:2], {2: lambda x: x}, site="decoder.mlp_out", batch_size=2,
                         max_new_tokens=6)
    assert row["delta_ce"] == 0.0 and row["wer"] == 0.0 and row["ce_clean"] > 0
