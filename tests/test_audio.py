"""Audio front end: parity with transformers' WhisperFeatureExtractor, resampling, errors."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from jaxasr_interp.whisper.audio import N_FRAMES, N_SAMPLES, SAMPLE_RATE, AudioError, load_audio, log_mel, mel_filters, pad_or_trim, sample_path, sample_transcripts

LIBRIVOX = "sense_and_sensibility_01_austen_64kb-0870.wav"


def _dominant_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


def _sine(hz: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * hz * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


@pytest.fixture(scope="module")
def extractors():
    from transformers import WhisperFeatureExtractor
    return {n: WhisperFeatureExtractor(feature_size=n) for n in (80, 128)}


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("name", ["jfk.wav", LIBRIVOX])
def test_log_mel_matches_whisper_feature_extractor(extractors, name, n_mels):
    audio = load_audio(sample_path(name))
    ref = extractors[n_mels](audio, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
    ours = log_mel(audio, n_mels=n_mels)
    assert ours.shape == (n_mels, N_FRAMES) and ours.dtype == jnp.float32
    assert np.abs(np.asarray(ours) - ref).max() <= 1e-4
    assert float(ours.std()) > 0.1  # real speech, not a constant floor that would match trivially


def test_log_mel_matches_extractor_on_audio_loud_at_both_edges(extractors):
    # The speech clips start and end near silence, which hides the STFT's edge padding; this
    # signal is loud from the first sample and runs past 30 s, so reflect-padding and the
    # 30 s cut must both match.
    rng = np.random.default_rng(0)
    x = _sine(440, 31.0, SAMPLE_RATE) + 0.05 * rng.standard_normal(31 * SAMPLE_RATE, np.float32)
    ref = extractors[80](x, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
    with pytest.warns(UserWarning):
        ours = np.asarray(log_mel(x))
    assert np.abs(ours - ref).max() <= 1e-4
    assert ours.std() > 0.1


def test_log_mel_matches_the_extractors_numpy_path(extractors):
    audio = load_audio(sample_path("jfk.wav"))
    # The public call uses torch.stft when torch is installed; check the pure-numpy path too.
    ref = extractors[80]._np_extract_fbank_features(pad_or_trim(audio)[None], "cpu")[0]
    assert np.abs(np.asarray(log_mel(audio)) - ref).max() <= 1e-4


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_equal_transformers_slaney_bank(n_mels):
    from transformers.audio_utils import mel_filter_bank
    ref = mel_filter_bank(num_frequency_bins=201, num_mel_filters=n_mels, min_frequency=0.0,
                          max_frequency=8000.0, sampling_rate=16000, norm="slaney", mel_scale="slaney")
    ours = mel_filters(n_mels)
    np.testing.assert_allclose(ours, ref.T.astype(np.float32), rtol=0, atol=1e-9)
    assert not ours.flags.writeable


def test_stereo_44k_file_is_mixed_by_mean_and_resampled(tmp_path):
    sr = 44100
    left, right = _sine(1000, 2.0, sr, amp=0.5), _sine(1000, 2.0, sr, amp=0.3)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), sr, subtype="FLOAT")
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == 2 * SAMPLE_RATE
    assert _dominant_hz(audio, SAMPLE_RATE) == pytest.approx(1000, abs=1)
    core = audio[1000:-1000]  # skip the resampling filter's edge transients
    assert np.abs(core).max() == pytest.approx(0.4, abs=0.01)  # mean of 0.5 and 0.3


def test_8k_file_and_array_are_upsampled(tmp_path):
    x = _sine(440, 1.5, 8000)
    path = tmp_path / "narrow.wav"
    sf.write(path, x, 8000)
    from_file = load_audio(path)
    from_array = load_audio(x, source_sr=8000)
    for audio in (from_file, from_array):
        assert len(audio) == 24000
        assert _dominant_hz(audio, SAMPLE_RATE) == pytest.approx(440, abs=1)
    np.testing.assert_allclose(from_file, from_array, atol=1e-4)  # file is 16-bit PCM


def test_array_at_target_rate_passes_through_and_int16_is_scaled():
    x = _sine(300, 0.5, SAMPLE_RATE)
    np.testing.assert_array_equal(load_audio(x), x)
    pcm = np.array([0, 16384, -32768], dtype=np.int16)
    np.testing.assert_allclose(load_audio(pcm), [0.0, 0.5, -1.0])


def test_pad_or_trim_lengths():
    assert pad_or_trim(np.ones(10)).shape == (N_SAMPLES,)
    assert pad_or_trim(np.ones(N_SAMPLES + 5)).shape == (N_SAMPLES,)
    padded = pad_or_trim(np.ones(3), 5)
    np.testing.assert_array_equal(padded, [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(pad_or_trim(np.arange(7), 4), [0, 1, 2, 3])
    batch = pad_or_trim(jnp.ones((2, 7)), 4)
    assert isinstance(batch, jax.Array) and batch.shape == (2, 4)
    assert pad_or_trim(np.ones((3, 2)), 5, axis=0).shape == (5, 2)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        load_audio(path)
    with pytest.raises(AudioError, match="not found"):
        load_audio(str(path))


def test_text_file_named_wav_is_rejected(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n")
    with pytest.raises(AudioError, match=r"cannot read .*notes\.wav as audio") as info:
        load_audio(path)
    assert "\n" not in str(info.value)


def test_empty_wav_is_rejected(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match=r"empty\.wav has no samples"):
        load_audio(path)
    with pytest.raises(AudioError, match="no samples"):
        load_audio(np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioError, match="0-length"):
        log_mel(np.zeros(0, dtype=np.float32))


def _three_second_wav(path, subtype="PCM_16"):
    """3 s of noise; returns (samples, offset of the first data byte, bytes per frame)."""
    x = (0.1 * np.random.default_rng(0).standard_normal(3 * SAMPLE_RATE)).astype(np.float32)
    sf.write(path, x, SAMPLE_RATE, subtype=subtype)
    return x, path.read_bytes().index(b"data") + 8, {"PCM_16": 2, "FLOAT": 4}[subtype]


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
@pytest.mark.parametrize("extra", [0, 1], ids=["whole-frames", "half-a-sample-more"])
def test_truncated_wav_is_refused_with_the_counts(tmp_path, subtype, extra):
    path = tmp_path / "cut.wav"
    _, start, frame = _three_second_wav(path, subtype)
    path.write_bytes(path.read_bytes()[: start + 8 * frame + extra])  # header + 8 samples of 48000
    assert sf.info(str(path)).frames == 8 and len(sf.read(str(path))[0]) == 8  # libsndfile: silent
    with pytest.raises(AudioError) as info:
        load_audio(path)
    message = str(info.value)
    assert message == (f"audio file {path} is truncated: header says 48000 frames, file holds 8 "
                       f"({8 * frame + extra} of {48000 * frame} data bytes); re-export or repair the file")


def test_whole_and_open_ended_wavs_are_not_called_truncated(tmp_path):
    path = tmp_path / "whole.wav"
    x, start, _ = _three_second_wav(path)
    np.testing.assert_allclose(load_audio(path), x, atol=1 / 32768, rtol=0)
    data = path.read_bytes()
    (tmp_path / "tail.wav").write_bytes(data + b"LIST" + (5).to_bytes(4, "little") + b"abcde\0")
    (tmp_path / "stream.wav").write_bytes(data[: start - 4] + b"\xff" * 4 + data[start:])  # size left open
    for name in ("tail.wav", "stream.wav"):
        np.testing.assert_allclose(load_audio(tmp_path / name), x, atol=1 / 32768, rtol=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples_are_rejected(bad):
    x = np.zeros(100, dtype=np.float32)
    x[5] = bad
    with pytest.raises(AudioError, match="NaN or inf"):
        load_audio(x)


def test_wrong_rank_and_misused_arguments():
    with pytest.raises(AudioError, match="1-D mono"):
        load_audio(np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(AudioError, match="jax.vmap"):
        log_mel(jnp.zeros((2, 100)))
    with pytest.raises(AudioError, match="source_sr applies to arrays only"):
        load_audio(sample_path(), source_sr=8000)
    with pytest.raises(AudioError, match="padding"):
        log_mel(np.zeros(10, dtype=np.float32), padding=-1)


def test_long_audio_warns_and_uses_the_first_30_s():
    x = np.concatenate([_sine(500, 30.0, SAMPLE_RATE), _sine(2000, 1.0, SAMPLE_RATE)])
    with pytest.warns(UserWarning, match=r"audio is 31\.0 s long; only the first 30 s are used"):
        long_mel = log_mel(x)
    np.testing.assert_array_equal(long_mel, log_mel(x[:N_SAMPLES]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        log_mel(x[:N_SAMPLES])  # exactly 30 s: no warning
        jax.jit(log_mel)(jnp.asarray(x))  # traced: no warning from inside the trace


def test_jit_and_vmap_equal_unbatched():
    a = load_audio(sample_path("jfk.wav"))[:5 * SAMPLE_RATE]
    b = pad_or_trim(load_audio(sample_path(LIBRIVOX)), len(a))
    single = [np.asarray(log_mel(x, n_mels=80)) for x in (a, b)]
    jitted = jax.jit(log_mel, static_argnames="n_mels")
    np.testing.assert_allclose(jitted(jnp.asarray(a), n_mels=80), single[0], atol=1e-5)
    batched = jax.jit(jax.vmap(lambda x: log_mel(x, n_mels=80)))(jnp.stack([a, b]))
    assert batched.shape == (2, 80, N_FRAMES)
    np.testing.assert_allclose(batched, np.stack(single), atol=1e-5)


def test_bundled_samples_and_transcripts():
    texts = sample_transcripts()
    assert len(texts) == 6 and texts["jfk.wav"].startswith("And so my fellow Americans")
    for name in texts:
        info = sf.info(sample_path(name))
        assert (info.samplerate, info.channels) == (SAMPLE_RATE, 1)
        assert 2.5 < info.duration < 12
    assert sample_path("jfk") == sample_path("jfk.wav")
    with pytest.raises(AudioError, match="available: .*jfk.wav"):
        sample_path("missing.wav")
    with pytest.raises(AudioError, match="no bundled sample"):
        sample_path("../audio.py")
