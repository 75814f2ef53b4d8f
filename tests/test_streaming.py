"""Streaming: batched jobs load audio and compute mels one batch at a time.

- ``transcribe_ids`` on the bundled clips gives exactly the ids of the pre-streaming
  implementation (a copy of its logic below: every mel first, then the same batches).
- Peak memory is flat in the number of inputs: a wrapper around the module's ``log_mel`` counts
  the mels alive at once (``weakref.finalize``). Over 40 inputs in batches of 4, transcription,
  the encoder lens and feature extraction hold at most two batches; computing every mel first
  (the old way) holds all 40 under the same counter.
- The encoder lens over a list (paths, a waveform and a mel mixed) equals the all-mels-first way.
- ``loaded_batches`` keeps input order, loads ahead on one thread, leaves no thread behind when
  the loop is abandoned; a missing file fails before any mel is computed.

The flat-memory tests use a toy random model (one narrow layer each side, tiny.en's tokenizer):
the counting needs many inputs, not a real model.
"""

import threading
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

import jaxasr_interp as jai
from jaxasr_interp.core.sharding import padded_size, shard_leading
from jaxasr_interp.lenses import encoder as lens_mod
from jaxasr_interp.lenses.encoder import encoder_lens, encoder_lens_ids
from jaxasr_interp.probes import features as features_mod
from jaxasr_interp.whisper import api
from jaxasr_interp.whisper.audio import AudioFileNotFoundError, load_audio
from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.whisper.decoding import greedy_decode, logit_bias
from jaxasr_interp.whisper.streaming import loaded_batches
from jaxasr_interp.whisper.tokenizer import WhisperTokenizer, cut_at_eot
from jaxasr_interp.weights.layout import param_shapes

SAMPLES = list(jai.sample_transcripts())
N, BATCH = 40, 4


@pytest.fixture(scope="module")
def tiny():
    return jai.load("tiny.en")


@pytest.fixture(scope="module")
def toy():
    dims = Dims(n_mels=80, n_audio_ctx=1500, n_audio_state=8, n_audio_head=2, n_audio_layer=1,
                n_vocab=51864, n_text_ctx=8, n_text_state=8, n_text_head=2, n_text_layer=1)
    rng = np.random.default_rng(0)
    is_shape = lambda x: isinstance(x, tuple) and all(isinstance(n, int) for n in x)
    params = jax.tree_util.tree_map(lambda s: jnp.asarray(0.2 * rng.standard_normal(s), jnp.float32),
                                    param_shapes(dims), is_leaf=is_shape)
    tok = WhisperTokenizer.from_file(api.default_tokenizer_file(dims), multilingual=False)
    return api.Model(params, dims, tok, "toy")


@pytest.fixture
def waves():
    wave = 0.1 * np.random.default_rng(1).standard_normal(16000).astype(np.float32)  # 1 s
    return [wave] * N


class MelCounter:
    """Wraps ``log_mel``: counts calls and the most mels alive at any one time."""

    def __init__(self, log_mel):
        self.log_mel, self.calls, self.alive, self.peak = log_mel, 0, 0, 0

    def __call__(self, *args, **kwargs):
        mel = self.log_mel(*args, **kwargs)
        self.calls, self.alive = self.calls + 1, self.alive + 1
        self.peak = max(self.peak, self.alive)
        weakref.finalize(mel, self._dead)
        return mel

    def _dead(self):
        self.alive -= 1


def counting(monkeypatch, module) -> MelCounter:
    counter = MelCounter(module.log_mel)
    monkeypatch.setattr(module, "log_mel", counter)
    return counter


def all_mels_first_ids(model, audio, *, batch_size, max_new_tokens=None):
    """``transcribe_ids`` before streaming (its logic copied): every mel, then the batches."""
    tok, dims = model.tokenizer, model.dims
    prompt = jnp.asarray(tok.prompt(language="en", task="transcribe"), jnp.int32)
    max_new_tokens = max_new_tokens or dims.n_text_ctx // 2
    bias = logit_bias(dims.n_vocab, ())
    mels = [api.log_mel(load_audio(a), n_mels=dims.n_mels) for a in audio]
    out = []
    for start in range(0, len(mels), batch_size):
        batch = mels[start:start + batch_size]
        padded = shard_leading(jnp.stack(batch + [batch[-1]] * (padded_size(batch_size) - len(batch))))
        features = api.encode_batch(model.params, padded, None, dims=dims, dtype=jnp.float32)
        ids = np.asarray(greedy_decode(model.params, features, prompt, tok.eot, bias, bias, dims=dims,
                                       max_new_tokens=max_new_tokens, edits=None, dtype=jnp.float32))
        out += [cut_at_eot(row, tok.eot) for row in ids[: len(batch)]]
    return out


def all_mels_first_lens_ids(model, audio, *, batch_size, max_new_tokens):
    """The encoder lens's token ids before streaming: ``as_mels`` of everything, then batches."""
    tok, dims = model.tokenizer, model.dims
    mels, _ = lens_mod.as_mels(model, audio)
    bias = logit_bias(dims.n_vocab, ())
    out = []
    for start in range(0, len(mels), batch_size):
        batch = mels[start:start + batch_size]
        size = padded_size(min(batch_size, len(mels)))
        padded = shard_leading(jnp.stack(batch + [batch[-1]] * (size - len(batch))))
        ids = np.asarray(encoder_lens_ids(model.params, padded, jnp.asarray(tok.prompt(), jnp.int32), tok.eot,
                                          bias, bias, None, dims=dims, ln_post=True,
                                          max_new_tokens=max_new_tokens))
        out += [[cut_at_eot(r.tolist(), tok.eot) for r in ids[i]] for i in range(len(batch))]
    return out


def test_bundled_clips_ids_identical_to_all_mels_first(tiny):
    paths = [jai.sample_path(n) for n in SAMPLES]
    want = all_mels_first_ids(tiny, paths, batch_size=4)
    assert jai.transcribe_ids(tiny, paths, batch_size=4) == want


def test_transcription_holds_at_most_two_batches_of_mels(toy, waves, monkeypatch, capsys):
    counter = counting(monkeypatch, api)
    ids = jai.transcribe_ids(toy, waves, batch_size=BATCH, max_new_tokens=2, progress=True)
    assert counter.calls == N and 0 < counter.peak <= 2 * BATCH, counter.peak
    assert f"{N // BATCH}/{N // BATCH}" in capsys.readouterr().err  # total known up front
    old = MelCounter(api.log_mel.log_mel)
    monkeypatch.setattr(api, "log_mel", old)
    assert all_mels_first_ids(toy, waves, batch_size=BATCH, max_new_tokens=2) == ids
    assert old.peak == N  # the old way: every mel alive at once


def test_encoder_lens_holds_at_most_two_batches_of_mels(toy, waves, monkeypatch):
    counter = counting(monkeypatch, lens_mod)
    lenses = encoder_lens(toy, waves, max_new_tokens=2, batch_size=BATCH)
    assert len(lenses) == N and counter.calls == N and 0 < counter.peak <= 2 * BATCH, counter.peak
    assert [x.token_ids for x in lenses] == all_mels_first_lens_ids(toy, waves, batch_size=BATCH,
                                                                    max_new_tokens=2)


def test_encoder_lens_over_mixed_list_identical_to_all_mels_first(tiny):
    paths = [jai.sample_path(n) for n in SAMPLES]
    wave = load_audio(paths[1])
    mel = np.asarray(jai.log_mel(load_audio(paths[2]), n_mels=tiny.dims.n_mels))
    items = [paths[0], wave, mel, *paths[3:]]
    want = all_mels_first_lens_ids(tiny, items, batch_size=4, max_new_tokens=24)
    lenses = encoder_lens(tiny, items, max_new_tokens=24, batch_size=4)
    assert [x.token_ids for x in lenses] == want
    with pytest.raises(ValueError, match="expected audio"):
        encoder_lens(tiny, [paths[0], np.zeros((3, 4), np.float32)])


def test_feature_extraction_holds_one_chunk_of_mels(toy, tmp_path, monkeypatch):
    wave = 0.1 * np.random.default_rng(2).standard_normal(16000).astype(np.float32)
    paths = []
    for i in range(12):
        paths.append(tmp_path / f"clip{i}.wav")
        sf.write(paths[-1], wave, 16000)
    counter = counting(monkeypatch, features_mod)
    jai.extract_features(toy, paths, tmp_path / "feats", chunk_size=BATCH, max_new_tokens=2,
                         progress=False)
    assert counter.calls == 12 and 0 < counter.peak <= BATCH, counter.peak


def test_missing_file_fails_before_any_mel(toy, waves, monkeypatch, tmp_path):
    counter = counting(monkeypatch, api)
    with pytest.raises(AudioFileNotFoundError, match="missing.wav"):
        jai.transcribe_ids(toy, waves[:8] + [tmp_path / "missing.wav"], batch_size=BATCH)
    assert counter.calls == 0


def test_loaded_batches_in_order_prefetched_and_closed():
    seen_threads = set()

    def load(x):
        seen_threads.add(threading.current_thread().name)
        return x * 10

    assert list(loaded_batches(list(range(7)), 3, load)) == [[0, 10, 20], [30, 40, 50], [60]]
    assert list(loaded_batches(list(range(7)), 3, load, prefetch=False))[-1] == [60]
    assert any(name.startswith("jai-audio") for name in seen_threads)
    before = threading.active_count()
    stream = loaded_batches(list(range(100)), 2, load)
    next(stream)
    stream.close()  # an abandoned loop: the loading thread ends
    assert threading.active_count() <= before
    assert list(loaded_batches([], 3, load)) == []
    with pytest.raises(ValueError, match="batch_size"):
        next(loaded_batches([1], 0, load))
