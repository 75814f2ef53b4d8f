"""Features: padding never reaches the pooled encoder features; the decoder feature is the
end-of-text position; a resumed extraction equals an uninterrupted one, bit for bit."""

import json
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from jaxasr_interp.whisper.api import Model, default_tokenizer_file
from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.probes.features import audio_positions, extract_features, load_features, pool_encoder, probe_matrix
from jaxasr_interp.whisper.model import decode, encode
from jaxasr_interp.whisper.tokenizer import WhisperTokenizer
from jaxasr_interp.weights.layout import param_shapes

# Small random model: the audio context must stay 1500 (log_mel always gives 30 s), the rest is
# prime-sized and tiny so the test runs in seconds. The vocabulary is tiny.en's (its tokenizer).
DIMS = Dims(n_mels=80, n_audio_ctx=1500, n_audio_state=14, n_audio_head=2, n_audio_layer=2,
            n_vocab=51864, n_text_ctx=24, n_text_state=14, n_text_head=2, n_text_layer=3)


def _random_params(dims, seed=0):
    # numpy draws: one jax.random call per leaf shape would compile ~30 programs.
    leaves, tree = jax.tree_util.tree_flatten(param_shapes(dims), is_leaf=lambda s: isinstance(s, tuple))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_unflatten(
        tree, [jnp.asarray(0.3 * rng.standard_normal(s), jnp.float32) for s in leaves])


@pytest.fixture(scope="module")
def model():
    tok = WhisperTokenizer.from_file(default_tokenizer_file(DIMS), multilingual=False)
    return Model(_random_params(DIMS), DIMS, tok, "random-test-model")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate((0.7, 1.3, 2.1, 0.4, 1.0)):
        path = folder / f"clip{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000)
        paths.append(path)
    return paths


def test_audio_positions_count_two_mel_frames_per_position():
    assert audio_positions(16000, 1500) == 50  # 1 s = 100 frames = 50 positions
    assert audio_positions(161, 1500) == 1  # 2 frames
    assert audio_positions(480000, 1500) == 1500
    assert audio_positions(10 * 480000, 1500) == 1500  # longer audio is cut to the window


def test_padding_frames_do_not_change_pooled_features():
    rng = np.random.default_rng(1)
    resid = jnp.asarray(rng.standard_normal((3, 40, 5)), jnp.float32)
    pooled = pool_encoder(resid, 17)
    changed = resid.at[:, 17:].set(1e6)  # anything in the padding
    np.testing.assert_array_equal(np.asarray(pool_encoder(changed, 17)), np.asarray(pooled))
    np.testing.assert_allclose(np.asarray(pooled), np.asarray(resid[:, :17].mean(1)), rtol=1e-5, atol=1e-6)


def test_features_are_the_masked_mean_and_the_end_of_text_residual(model, clips, tmp_path):
    out = extract_features(model, clips[:2], tmp_path / "f", chunk_size=2, progress=False)
    feats = load_features(out)
    assert feats.encoder.shape == (2, 2, 14) and feats.decoder.shape == (3, 2, 14)
    from jaxasr_interp.whisper.audio import load_audio, log_mel
    audio = load_audio(clips[1])
    n = audio_positions(audio.size, 1500)
    assert feats.n_valid[1] == n == 65  # 1.3 s -> 130 mel frames -> 65 positions
    af, acts = encode(model.params, log_mel(audio), dims=DIMS, capture=("encoder.resid_post",))
    want = np.asarray(acts["encoder.resid_post"][:, :n].mean(1))
    np.testing.assert_allclose(feats.encoder[:, 1], want, rtol=1e-4, atol=1e-5)
    tokens = jnp.asarray(model.tokenizer.prompt() + feats.transcript_ids[1] + [model.tokenizer.eot])
    _, dacts = decode(model.params, tokens, af, dims=DIMS, capture=("decoder.resid_post",))
    np.testing.assert_allclose(feats.decoder[:, 1], np.asarray(dacts["decoder.resid_post"][:, -1]),
                               rtol=1e-4, atol=1e-5)
    x, names = probe_matrix(feats)
    assert x.shape == (5, 2, 14) and names[2] == "decoder.0"


def test_resumed_extraction_equals_uninterrupted(model, clips, tmp_path):
    whole = load_features(extract_features(model, clips, tmp_path / "whole", chunk_size=2, progress=False))
    part = tmp_path / "part"
    extract_features(model, clips, part, chunk_size=2, progress=False, limit_chunks=1)
    with pytest.raises(ValueError, match="incomplete"):
        load_features(part)
    assert len(list(part.glob("chunk_*.npz"))) == 1
    resumed = load_features(extract_features(model, clips, part, chunk_size=2, progress=False))
    for name in ("encoder", "decoder", "n_valid"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name))
    assert resumed.transcripts == whole.transcripts
    with pytest.raises(ValueError, match="holds another feature extraction"):
        extract_features(model, clips[:3], part, chunk_size=2, progress=False)
    # an extraction written before the one resumable mechanism (meta.json + the same chunks)
    # still loads, and resumes: its manifest is adopted, nothing is recomputed
    old = tmp_path / "old"
    extract_features(model, clips, old, chunk_size=2, progress=False, limit_chunks=1)
    manifest = json.loads((old / "sweep.json").read_text())
    (old / "sweep.json").unlink()
    (old / "meta.json").write_text(json.dumps(manifest["key"]))
    first = (old / "chunk_00000.npz").stat().st_mtime_ns
    resumed_old = load_features(extract_features(model, clips, old, chunk_size=2, progress=False))
    assert (old / "chunk_00000.npz").stat().st_mtime_ns == first
    np.testing.assert_array_equal(resumed_old.encoder, whole.encoder)
