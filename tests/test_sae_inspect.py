"""Inspecting and using SAE latents: the top snippets are the brute-force argmax rows, a
latent's trace is the encoding of the captured activations, steering at alpha 0 is the
identity and a large alpha changes the transcript, ablation removes exactly a latent's
contribution; `sae train` + `sae inspect` end to end; the study's JSON schema at a tiny size."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

import jaxasr_interp as jai
from jaxasr_interp.sae import SAEConfig
from jaxasr_interp.sae.inspect import SAMPLES_PER_POSITION, latent_trace, snippet, top_activations
from jaxasr_interp.sae.steer import ablation_delta, edited_features, edited_transcripts, steering_edit
from jaxasr_interp.sae.store import ActivationStore, write_activations
from jaxasr_interp.whisper.api import Model, default_tokenizer_file
from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.whisper.tokenizer import WhisperTokenizer
from jaxasr_interp.weights.layout import param_shapes

# as tests/test_sae_store.py: the audio context stays 1500, the rest tiny and prime-sized
DIMS = Dims(n_mels=80, n_audio_ctx=1500, n_audio_state=14, n_audio_head=2, n_audio_layer=2,
            n_vocab=51864, n_text_ctx=24, n_text_state=14, n_text_head=2, n_text_layer=3)
D_SAE, K = 37, 5


def _random_params(shapes, seed, scale=0.3):
    leaves, tree = jax.tree_util.tree_flatten(shapes, is_leaf=lambda s: isinstance(s, tuple))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_unflatten(tree, [jnp.asarray(scale * rng.standard_normal(s), jnp.float32) for s in leaves])


def _sae(d_in, seed=0, layer=1, site="encoder.resid_post"):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((D_SAE, d_in)).astype(np.float32)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    params = {"W_enc": rng.standard_normal((d_in, D_SAE)).astype(np.float32), "b_enc": np.zeros(D_SAE, np.float32),
              "W_dec": w, "b_dec": rng.standard_normal(d_in).astype(np.float32)}
    return params, SAEConfig(d_in, D_SAE, "topk", k=K, site=site, layer=layer)


def _numpy_latents(params, x):
    pre = (x - params["b_dec"]) @ params["W_enc"] + params["b_enc"]
    z = np.zeros_like(pre)
    top = np.argsort(-pre, axis=1)[:, :K]
    np.put_along_axis(z, top, np.maximum(np.take_along_axis(pre, top, 1), 0), axis=1)
    return z


@pytest.fixture(scope="module")
def model():
    tok = WhisperTokenizer.from_file(default_tokenizer_file(DIMS), multilingual=False)
    return Model(_random_params(param_shapes(DIMS), 3), DIMS, tok, "random-test-model")


@pytest.fixture(scope="module")
def store(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    rng, paths = np.random.default_rng(0), []
    for i, seconds in enumerate((0.7, 1.3, 0.4, 1.0, 0.5)):
        paths.append(folder / f"clip{i}.wav")
        sf.write(paths[-1], (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000)
    write_activations(model, paths, folder / "acts", layers=(0, 1), chunk_size=2, progress=False)
    return ActivationStore(folder / "acts")


def _all_rows(store, layer):
    shards = [store.shard(i) for i in range(store.n_shards)]
    row = store.layers.index(layer)
    return (np.concatenate([s["acts"][row] for s in shards]), np.concatenate([s["clip"] for s in shards]),
            np.concatenate([s["pos"] for s in shards]))


@pytest.mark.parametrize("distinct", [False, True])
def test_top_snippets_are_the_argmax_rows(store, distinct):
    sae = _sae(14)
    x, clip, pos = _all_rows(store, 1)
    z = _numpy_latents(sae[0], x)
    top = top_activations(store, sae, k=4, distinct_clips=distinct)
    assert top.values.shape == (D_SAE, 4) and top.n_rows == len(x)
    np.testing.assert_array_equal(top.fires, (z > 0).sum(0))
    for j in range(D_SAE):
        if distinct:  # each clip's best row, then the clips by that value
            best = {c: np.flatnonzero(clip == c)[np.argmax(z[clip == c, j])] for c in np.unique(clip)}
            rows = sorted(best.values(), key=lambda r: -z[r, j])[:4]
        else:
            rows = np.argsort(-z[:, j], kind="stable")[:4]
        rows = [r for r in rows if z[r, j] > 0]
        got = top.of(j)
        assert len(got) == len(rows)
        np.testing.assert_allclose([g[0] for g in got], z[rows, j], rtol=1e-5)
        assert [(g[1], g[2]) for g in got] == [(int(clip[r]), int(pos[r])) for r in rows]
    assert (top.clip[top.values == 0] == -1).all()


def test_trace_is_the_encoding_of_the_captured_activations(model, store):
    sae = _sae(14, seed=1)
    x, clip, pos = _all_rows(store, 1)
    path = store.meta["items"][1]
    trace = latent_trace(model, sae, path, [0, 3, 7])
    mine = np.flatnonzero(clip == 1)
    mine = mine[np.argsort(pos[mine])]
    np.testing.assert_array_equal(trace.positions, pos[mine])
    np.testing.assert_allclose(trace.values, _numpy_latents(sae[0], x[mine])[:, [0, 3, 7]], rtol=1e-4, atol=1e-5)
    assert trace.times[0] == pytest.approx(0.01) and len(trace.times) == 65  # 1.3 s: 65 frames of 20 ms
    wave, start = snippet(path, 30, seconds=0.5)
    assert wave.size == 8000 and start == pytest.approx((30.5 * SAMPLES_PER_POSITION - 4000) / 16000)


def test_ablation_removes_exactly_the_latents_contribution():
    params, cfg = _sae(14, seed=2)
    x = np.random.default_rng(4).standard_normal((9, 14)).astype(np.float32)
    z = _numpy_latents(params, x)
    np.testing.assert_allclose(ablation_delta((params, cfg), x, [2, 5]), -(z[:, [2, 5]] @ params["W_dec"][[2, 5]]),
                               rtol=1e-5, atol=1e-6)
    every = x + ablation_delta((params, cfg), x, np.arange(D_SAE))  # all latents: the SAE's error + b_dec
    np.testing.assert_allclose(every, x - (z @ params["W_dec"] + params["b_dec"]) + params["b_dec"], rtol=1e-4, atol=1e-4)


def test_single_latent_statistics_against_brute_force():
    from jaxasr_interp.sae.separation import auroc, best_thresholds, cv_single_latent, predict
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 41)
    x = np.round(rng.standard_normal((41, 7)), 1)  # ties included
    x[:, 3] += 3 * y
    x[:, 5] -= 2 * y
    pos, neg = x[y == 1], x[y == 0]
    pairs = (pos[:, None] > neg[None]).mean((0, 1)) + 0.5 * (pos[:, None] == neg[None]).mean((0, 1))
    np.testing.assert_allclose(auroc(x, y), pairs)
    acc, thr, sign = best_thresholds(x, y)
    for j in range(7):
        cuts = np.concatenate([[-np.inf], np.unique(x[:, j])])
        best = max(max(((x[:, j] > t) == y).mean(), ((x[:, j] <= t) == y).mean()) for t in cuts)
        assert acc[j] == pytest.approx(best) and (predict(x[:, j], thr[j], sign[j]) == y).mean() == pytest.approx(best)
    correct, chosen = cv_single_latent(x, y, seeds=(0, 1))
    assert correct.mean() > 0.8 and np.bincount(chosen).argmax() == 3 and len(chosen) == 10  # 5 folds x 2 seeds


def test_steering_alpha_zero_is_identity_and_large_alpha_changes_the_transcript():
    model = jai.load("tiny.en")
    path = str(jai.sample_path("sense_and_sensibility_01_austen_64kb-0880.wav"))
    sae = _sae(384, layer=2)
    kw = dict(max_new_tokens=16)
    clean = jai.transcribe(model, [path], **kw)
    assert "sposed young man" in clean[0].replace("-", " ")  # tiny.en's known transcript of this clip
    assert jai.transcribe(model, [path], edits=steering_edit(sae, [3], [0.0]), **kw) == clean
    assert jai.transcribe(model, [path], edits=steering_edit(sae, [3], [400.0]), **kw) != clean


def test_per_clip_edits_equal_fixed_edits(model, store):
    """On each clip's audio frames: no edit is the clean run; the in-program ablation equals the
    fixed add of ablation_delta computed from a clean capture, and steering the add of the
    direction on those frames (the padding frames left clean)."""
    sae, paths = _sae(14, seed=5), store.meta["items"][:3]
    clean = jai.transcribe(model, paths, max_new_tokens=6)
    assert edited_transcripts(model, paths, sae, steer=([1], [0.0]), ablate=[], batch_size=2, max_new_tokens=6) == clean
    got = edited_features(model, paths, sae, steer=([2], [3.0]), ablate=[0, 4, 9], batch_size=2)
    x, clip, pos = _all_rows(store, 1)
    for c, path in enumerate(paths):
        rows = np.flatnonzero(clip == c)
        rows = rows[np.argsort(pos[rows])]
        delta = np.zeros((1500, 14), np.float32)
        delta[: rows.size] = ablation_delta(sae, x[rows], [0, 4, 9]) + 3.0 * sae[0]["W_dec"][2]
        mel = jai.log_mel(jai.load_audio(path))
        fixed = jai.encode(model.params, mel, dims=DIMS, edits={"encoder.resid_post": jai.add(delta[None], layers=[1])})[0]
        plain = jai.encode(model.params, mel, dims=DIMS)[0]
        np.testing.assert_allclose(got[c], np.asarray(fixed), rtol=1e-4, atol=1e-5)
        assert np.abs(np.asarray(fixed) - np.asarray(plain)).max() > 1e-2  # the edit does something


def test_cli_sae_train_and_inspect_end_to_end(tmp_path, capsys):
    from jaxasr_interp.cli.main import main
    clips = [str(jai.sample_path(n)) for n in ("jfk.wav", "sense_and_sensibility_01_austen_64kb-0880.wav")]
    out = tmp_path / "run"
    assert main(["sae", "train", *clips, "--out", str(out), "--layers", "2", "--expansion", "2", "--k", "8",
                 "--steps", "5", "--batch-size", "128"]) == 0
    summary = json.loads((out / "saes.json").read_text())
    (sae,) = summary["saes"]
    assert sae["layer"] == 2 and sae["d_sae"] == 768 and sae["n_rows"] == 550 + 150  # 11 s + 3 s of frames
    assert main(["sae", "inspect", sae["dir"], "--latent", "1,2", "--out", str(tmp_path / "page"), "--k", "2",
                 "--traces", "1"]) == 0
    page = (tmp_path / "page" / "index.html").read_text()
    nums = json.loads((tmp_path / "page" / "latents.json").read_text())
    assert [n["latent"] for n in nums["latents"]] == [1, 2] and 'id="latent-1"' in page
    shown = sum(len(n["top"]) for n in nums["latents"])
    assert page.count("<audio controls") == shown and page.count("data:image/png;base64") == sum(
        min(1, len(n["top"])) for n in nums["latents"])
    assert main(["sae", "inspect", sae["dir"], "--latent", "768", "--out", str(tmp_path / "bad")]) == 2
    assert "out of range" in capsys.readouterr().err


def test_study_at_a_tiny_size_writes_its_schema(model, tmp_path):
    from jaxasr_interp.sae import study
    result = study.run(model, tmp_path / "results", work=tmp_path / "work", layers=[1], targets=("speech",), n=5,
                       expansion=2, k=3, steps=3, batch=64, top=2, ablate_top=2, controls=1, factors=(4.0,),
                       max_new_tokens=3, seeds=(0,), progress=False)
    saved = json.loads((tmp_path / "results" / "sae_study_random-test-model.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["layers"] == [1] and saved["n_clips"] == 10 and list(saved["targets"]) == ["speech"]
    (row,) = saved["targets"]["speech"]["layers"]
    for ci in (row["best_auroc"]["auroc"], row["cv_single_latent"]["accuracy"], row["probe"]["accuracy"]):
        assert set(ci) == {"value", "lo", "hi", "n"} and ci["lo"] <= ci["value"] <= ci["hi"] and ci["n"] == 10
    hall = saved["hallucination"]
    assert hall["n"] == 5 and [h["layer"] for h in hall["layers"]] == [1]
    conditions = hall["layers"][0]["conditions"]
    assert set(conditions) == {"ablate_nonspeech", "ablate_control", "steer_speech_x4", "steer_control_x4"}
    for c in conditions.values():
        assert c["non_empty"]["rate"]["n"] == c["words"]["minus_clean"]["n"] == c["changed"]["n"] == 5
    assert set(saved["seconds"]) == set(saved["cpu_seconds"]) == {"data", "store_and_train", "detection",
                                                                  "hallucinations", "noise_transcripts",
                                                                  "detection_added", "total"}
    assert saved["accent_4way"] is None and saved["noise_transcripts"] is None  # not asked for
    assert "| target (positive, n) |" in study.markdown(saved)


def test_sae_train_finds_the_audio_in_directories(tmp_path):
    from jaxasr_interp.cli.sae import audio_files
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.wav", "a/b/y.FLAC", "a/notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert audio_files([str(tmp_path / "a"), "z.wav"]) == [str(tmp_path / "a/b/y.FLAC"), str(tmp_path / "a/x.wav"),
                                                         "z.wav"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no audio files"):
        audio_files([str(tmp_path / "empty")])
