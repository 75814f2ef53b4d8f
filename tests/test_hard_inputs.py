"""Hard inputs across the CLI and the API: each is a clear one-line error with exit status 2
(CLI) or a specific exception (API), or is handled correctly (resampled, downmixed, windowed).

The audio variants that must be handled are transcribed in ONE batched call (one compiled
program for the whole file) and each test checks its own row against the 16 kHz original.
"""

import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf
from scipy.signal import butter, resample_poly, sosfiltfilt

import jaxasr_interp as jai
from jaxasr_interp.whisper.audio import AudioError
from jaxasr_interp.cli.main import main
from jaxasr_interp.whisper.sites import SiteError
from jaxasr_interp.weights import CheckpointError, ct2
from test_weights import SMALL, random_params

JFK = str(jai.sample_path("jfk.wav"))


@pytest.fixture(scope="module")
def model():
    return jai.load("tiny.en")


@pytest.fixture(scope="module")
def jfk():
    return jai.load_audio(JFK)


def band_limited(x, hz=3000.0):
    """Zero-phase low-pass (independent of the resampler under test)."""
    return sosfiltfilt(butter(10, hz, fs=16000, output="sos"), x).astype(np.float32)


def _write_variants(d, jfk):
    """The files transcribed together. The 8 kHz one is the speech band-limited below 4 kHz
    and decimated, so its reference is the same band-limited speech at 16 kHz: narrowband
    audio carries less than the original (tiny.en hears "America" for "Americans" in plain
    8 kHz JFK), and what must match is the resampling, not the lost band."""
    narrow = band_limited(jfk)
    files = {"16k": JFK, "narrow16k": d / "jfk_narrow_16k.wav", "8k": d / "jfk_8k.wav",
             "44k": d / "jfk_44k.wav", "long": d / "jfk_x3.wav", "silence": d / "silence.wav"}
    sf.write(files["narrow16k"], narrow, 16000, subtype="FLOAT")
    sf.write(files["8k"], narrow[::2], 8000)  # 16-bit PCM, as telephone audio comes
    sf.write(files["44k"], resample_poly(jfk, 441, 160).astype(np.float32), 44100, subtype="FLOAT")
    sf.write(files["long"], np.tile(jfk, 3), 16000, subtype="FLOAT")  # 33 s
    sf.write(files["silence"], np.zeros(32000, np.float32), 16000)
    return {k: str(v) for k, v in files.items()}


@pytest.fixture(scope="module")
def handled(model, jfk, tmp_path_factory):
    """{variant: (path, transcript)} and the warnings raised while transcribing them."""
    files = _write_variants(tmp_path_factory.mktemp("variants"), jfk)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        texts = jai.transcribe(model, list(files.values()), batch_size=len(files))
    return {k: (p, t.strip()) for (k, p), t in zip(files.items(), texts)}, caught


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# ----------------------------------------------------------------- audio that must be handled

def test_16k_original_is_the_known_transcript(handled):
    text = handled[0]["16k"][1]
    assert text.startswith("And so my fellow Americans") and text.endswith("for your country.")


def test_8k_audio_is_upsampled_to_its_16k_equivalent(handled, jfk):
    texts, _ = handled
    loaded = jai.load_audio(texts["8k"][0])
    assert len(loaded) == len(jfk)
    core = slice(800, -800)  # the filters' edge transients
    np.testing.assert_allclose(loaded[core], band_limited(jfk)[core], atol=2e-3, rtol=0)
    assert texts["8k"][1] == texts["narrow16k"][1] and texts["8k"][1].startswith("And so my fellow")


def test_44k_audio_is_downsampled_to_the_same_transcript(handled, jfk):
    texts, _ = handled
    loaded = jai.load_audio(texts["44k"][0])
    assert len(loaded) == len(jfk)  # 44.1k -> 16k is exactly 160/441
    core = slice(800, -800)
    np.testing.assert_allclose(loaded[core], jfk[core], atol=2e-2, rtol=0)
    assert texts["44k"][1] == texts["16k"][1]


def test_stereo_is_downmixed_by_the_mean(tmp_path, jfk):
    # each channel alone is drowned in noise; only their mean is the clean speech
    noise = 0.3 * np.random.default_rng(0).standard_normal(len(jfk)).astype(np.float32)
    sf.write(tmp_path / "stereo.wav", np.stack([jfk + noise, jfk - noise], 1), 16000, subtype="FLOAT")
    # the samples the model sees equal the mono original, so does everything downstream
    np.testing.assert_allclose(jai.load_audio(tmp_path / "stereo.wav"), jfk, atol=1e-6, rtol=0)


def test_longer_than_30_s_uses_the_first_window_and_warns_once(handled):
    texts, caught = handled
    long_warnings = [w for w in caught if "only the first 30 s are used" in str(w.message)]
    assert len(long_warnings) == 1 and "33.0 s" in str(long_warnings[0].message)
    assert texts["long"][1].startswith(" ".join(texts["16k"][1].split()[:6]))


def test_silence_gives_an_empty_or_short_transcript(handled):
    assert len(handled[0]["silence"][1].split()) <= 3
    mel = np.asarray(jai.log_mel(np.zeros(32000, np.float32)))
    assert np.isfinite(mel).all() and mel.std() == 0  # a flat floor: log of zero power is clamped


# ------------------------------------------------------------------- audio that must be refused

def cut_wav(d, jfk):
    """JFK as 16-bit PCM, cut after the first 40000 of its 176000 samples (an interrupted copy)."""
    sf.write(d / "cut.wav", jfk, 16000, subtype="PCM_16")
    data = (d / "cut.wav").read_bytes()
    (d / "cut.wav").write_bytes(data[: data.index(b"data") + 8 + 2 * 40000])
    return d / "cut.wav"


def test_truncated_wav_is_a_one_line_error_not_a_short_transcript(tmp_path, capsys, jfk):
    path = cut_wav(tmp_path, jfk)
    assert main(["transcribe", str(path)]) == 2  # libsndfile alone reads the 40000 silently
    one_line_error(capsys, f"{path} is truncated: header says 176000 frames, file holds 40000",
                   "re-export or repair the file")
    with pytest.raises(AudioError, match="is truncated: header says 176000 frames, file holds 40000"):
        jai.load_audio(path)


@pytest.mark.parametrize("make, needle", [
    (lambda d: sf.write(d / "empty.wav", np.zeros(0, np.float32), 16000) or d / "empty.wav", "no samples"),
    (lambda d: (d / "head.wav").write_bytes(Path(JFK).read_bytes()[:30]) and d / "head.wav", "cannot read"),
    (lambda d: (d / "notes.wav").write_text("not audio\n") and d / "notes.wav", "cannot read"),
    (lambda d: d, "is a directory"),
    (lambda d: cut_wav(d, jai.load_audio(JFK)), "is truncated"),
], ids=["empty", "truncated-header", "non-audio", "directory", "truncated-data"])
def test_unreadable_audio_is_a_one_line_error_before_the_model_loads(tmp_path, capsys, make, needle):
    path = make(tmp_path)
    assert main(["report", str(path), "--out", str(tmp_path / "out"), "--model", "no-such-model"]) == 2
    one_line_error(capsys, needle, str(path))  # the audio error, not the unknown model


def test_nan_samples_are_refused_in_files_and_arrays(tmp_path, capsys, model, jfk):
    bad = jfk.copy()
    bad[1000] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, bad, 16000, subtype="FLOAT")
    assert main(["transcribe", str(path)]) == 2
    one_line_error(capsys, "NaN or inf", "nan.wav")
    with pytest.raises(AudioError, match="NaN or inf"):
        jai.transcribe(model, bad)


def test_multichannel_array_is_refused_with_the_fix(model, jfk):
    with pytest.raises(AudioError, match=r"1-D mono.*got shape \(2, 176000\).*mean"):
        jai.transcribe(model, np.stack([jfk, jfk]))


# ------------------------------------------------------------------ British spelling in scoring

def test_british_spelling_scores_as_american_like_whisper():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer
    from jaxasr_interp.whisper.text_metrics import english_spelling_map, normalize, word_errors
    spelling = english_spelling_map()
    assert len(spelling) == 1739 and spelling["colour"] == "color" and spelling["catalogue"] == "catalog"
    assert word_errors(normalize("The colour."), normalize("the color")) == (0, 2)
    no_map = EnglishTextNormalizer({})  # what scoring did before: one substitution
    assert word_errors(no_map("The colour."), no_map("the color")) == (1, 2)
    sentence = "Mr. Smith's neighbour didn't realise the colour of the theatre's aluminium catalogue."
    expected = "mister smith is neighbor did not realize the color of the theater is aluminum catalog"
    assert normalize(sentence) == EnglishTextNormalizer(spelling)(sentence) == expected


# ---------------------------------------------------------------------- models and checkpoints

def test_unknown_model_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", JFK, "--out", str(tmp_path), "--model", "tiny.xx"]) == 2
    one_line_error(capsys, "unknown model 'tiny.xx'")
    with pytest.raises(CheckpointError, match="unknown model"):
        jai.load("tiny.xx")


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "model.bin").write_bytes(b"\x00garbage, not a checkpoint\n" * 40)
    assert main(["transcribe", JFK, "--model", str(tmp_path)]) == 2
    one_line_error(capsys, "model.bin")
    with pytest.raises(CheckpointError):
        jai.load(tmp_path)


def test_shape_mismatched_checkpoint_names_the_tensor(tmp_path, capsys):
    variables, aliases = ct2.ct2_variables_from_params(random_params(SMALL), SMALL)
    variables["encoder/layer_0/ffn/linear_1/weight"] = np.ones((12, 47), np.float32)
    path = ct2.write_ct2(tmp_path / "model.bin", variables, aliases=aliases)
    assert main(["transcribe", JFK, "--model", str(path)]) == 2
    one_line_error(capsys, "encoder/layer_0/ffn/linear_1/weight")
    with pytest.raises(CheckpointError, match="encoder/layer_0/ffn/linear_1/weight"):
        jai.load(path)


# ------------------------------------------------------------------------- edits, sites, mels

def test_wrong_shape_edit_names_the_site_and_shapes(model, jfk):
    mel, tokens = jai.log_mel(jfk), jnp.asarray(model.tokenizer.prompt())
    with pytest.raises(ValueError, match=r"decoder.cross_attn_out.*does not broadcast"):
        jai.forward(model.params, mel, tokens, dims=model.dims,
                    edits={"decoder.cross_attn_out": jai.add(jnp.ones((2, 5, 7)))})


def test_unknown_site_lists_the_nearest_names(model, jfk):
    mel, tokens = jai.log_mel(jfk), jnp.asarray(model.tokenizer.prompt())
    with pytest.raises(SiteError, match="did you mean decoder.cross_attn.pattern"):
        jai.forward(model.params, mel, tokens, dims=model.dims, capture=["decoder.cross_atn.pattern"])
    with pytest.raises(SiteError, match="unknown site"):
        jai.forward(model.params, mel, tokens, dims=model.dims, edits={"decoder.nothing": jai.zero()})


def test_mel_of_the_wrong_shape_is_refused(model, jfk):
    with pytest.raises(ValueError, match=r"mel has shape \(80, 1000\), expected \(80, 3000\)"):
        jai.forward(model.params, jai.log_mel(jfk)[:, :1000], jnp.asarray([1, 2]), dims=model.dims)


# ------------------------------------------------------------------------------ command line

@pytest.mark.parametrize("argv, needle", [
    (["report"], "--out"),
    (["report", JFK, "--out", "x", "--alpha", "lots"], "invalid float value: 'lots'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["logit-lens", JFK, "--out", "x", "--site", "resid_mad"], "invalid choice: 'resid_mad'"),
    (["transcribe", JFK, "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_bad_arguments_are_one_line_and_status_2(capsys, argv, needle):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    one_line_error(capsys, needle, "--help")


def test_bad_values_after_parsing_are_one_line_and_status_2(tmp_path, capsys):
    assert main(["report", JFK, "--out", str(tmp_path), "--alpha", "1.5"]) == 2
    one_line_error(capsys, "--alpha must be between 0 and 1")
    assert main(["transcribe", JFK, "--batch-size", "0"]) == 2
    one_line_error(capsys, "--batch-size")


@pytest.mark.parametrize("command", ["report", "logit-lens"])
def test_unwritable_output_is_refused_before_any_work(tmp_path, capsys, command):
    (tmp_path / "file").write_text("x")
    cases = [("/proc", "not writable"),  # exists, but no file can be created there, even by root
             ("/sys/jaxasr-interp-out", "not writable"),
             (str(tmp_path / "file" / "sub"), "is not a directory")]
    for out, needle in cases:
        assert main([command, JFK, "--out", out, "--model", "no-such-model"]) == 2
        one_line_error(capsys, f"cannot write to {out}", needle)  # not the unknown model
