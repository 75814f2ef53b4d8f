"""Nested cross-validation of probes: the planted layer is chosen on inner folds, the outer
estimate is unbiased on a null dataset (choosing on the test folds is not), bootstrap
intervals have the binomial width, and the experiment runs end to end, bit-identically."""

import json

import numpy as np
import pytest

from jaxasr_interp.core.stats import bootstrap_ci
from jaxasr_interp.probes.nested import group_folds, nested_cv
from jaxasr_interp.probes.sweep import planted_features


def test_group_folds_keep_a_group_on_one_side_and_stratify():
    labels = np.arange(60) % 2
    groups = np.arange(60) // 3  # 20 groups of 3, each one class
    fold = group_folds(labels, groups, 5, seed=0)
    for g in np.unique(groups):
        assert np.unique(fold[groups == g]).size == 1
    for f in range(5):
        assert np.bincount(labels[fold == f], minlength=2).min() >= 4


def test_nested_cv_picks_the_planted_layer_on_inner_folds():
    labels = np.arange(120) % 2
    x = planted_features(labels, 6, 24, layers=[3], strength=1.5, seed=1)
    res = nested_cv(x, labels, k=5, inner_k=4)
    assert (res.best_layer == 3).all()
    assert res.correct[3].mean() > 0.8 and res.best_correct.mean() > 0.8
    assert abs(res.control_correct[3].mean() - 0.5) < 0.15
    assert res.majority == 0.5


def test_null_dataset_outer_estimate_is_unbiased_and_test_fold_choice_is_not():
    rng = np.random.default_rng(0)
    nested, chosen_on_test = [], []
    for rep in range(6):
        labels = rng.permutation(np.arange(80) % 2)
        x = rng.standard_normal((6, 80, 16)).astype(np.float32)
        res = nested_cv(x, labels, k=5, inner_k=4, control=False, seed=rep)
        nested.append(res.best_correct.mean())
        chosen_on_test.append(res.test_selected_best)
    nested, chosen_on_test = np.mean(nested), np.mean(chosen_on_test)
    # 480 tested items in all: chance 0.5 with a standard error of ~0.023
    assert 0.42 < nested < 0.56
    assert chosen_on_test > nested + 0.05 and chosen_on_test > 0.55  # max over 18 (layer, L2) fits


def test_bootstrap_interval_has_the_binomial_width():
    values = np.r_[np.ones(300), np.zeros(100)]  # accuracy 0.75 on 400 items
    point, lo, hi = bootstrap_ci(values, n_boot=2000, seed=0)
    half = 1.96 * np.sqrt(0.75 * 0.25 / 400)  # 0.0424
    assert point == 0.75
    assert abs((hi - lo) / 2 - half) < 0.006
    assert lo < 0.75 < hi


def test_length_matched_balancing_equalises_the_word_count_histogram():
    """Errors made longer by construction: noise x rate strata keep the length gap, adding the
    exact word count to the strata removes it (same histogram per class) and keeps noise and rate balanced."""
    from jaxasr_interp.experiments import probing_data as D
    rng = np.random.default_rng(0)
    n = 600
    labels = rng.integers(0, 2, n)
    snr = rng.choice([-3.0, 2.0, 10.0, D.CLEAN_SNR], n)
    speed = rng.integers(150, 320, n)
    words = rng.integers(6, 12, n) + 2 * labels  # errors 2 words longer on average
    plain = D.balanced_by_strata(labels, D.strata(snr, speed), seed=0)
    gap = words[plain][labels[plain] == 1].mean() - words[plain][labels[plain] == 0].mean()
    assert 1.5 < gap < 2.5
    keep = D.balanced_by_strata(labels, D.strata(snr, speed, words), seed=0)
    by_class = [keep[labels[keep] == c] for c in (0, 1)]
    assert len(by_class[0]) == len(by_class[1]) > 100
    for values in (words, D.strata(snr, speed)):
        assert (np.bincount(values[by_class[0]], minlength=400) == np.bincount(values[by_class[1]], minlength=400)).all()
    assert D.word_counts(["a b  c", "", "one"]).tolist() == [3, 0, 1]


def test_cli_hallucination_dataset_is_matched_on_noise_and_rate(tmp_path, monkeypatch):
    """``experiment probe-hallucination``'s builder: correct / error pairs from one noise x rate
    stratum each, at most k, the WER thresholds obeyed, the audio readable."""
    import types

    import jaxasr_interp.whisper.api as api
    from jaxasr_interp.data import read_dataset
    from jaxasr_interp.experiments import probing_data as D

    def fake_transcribe(model, paths, **kw):  # right on every third item, else the first two words
        refs = [r["transcript"] for r in read_dataset(tmp_path / "h" / "pool").rows]
        return [t if i % 3 == 0 else " ".join(t.split()[:2]) for i, t in enumerate(refs)]

    monkeypatch.setattr(api, "transcribe", fake_transcribe)
    counts = D.build_matched_outcomes(tmp_path / "h", types.SimpleNamespace(source="fake"), pool=40, k=5, seed=1)
    data = read_dataset(tmp_path / "h")
    assert counts["outcome"]["correct"] == counts["outcome"]["error"] and 2 <= counts["outcome"]["correct"] <= 5
    by = {c: [r for r in data.rows if r["outcome"] == c] for c in ("correct", "error")}
    stratum = lambda rows: sorted(D.strata(*D.pool_levels(rows)).tolist())
    assert stratum(by["correct"]) == stratum(by["error"])
    assert max(float(r["wer"]) for r in by["correct"]) <= 0.2 < 0.5 < min(float(r["wer"]) for r in by["error"])
    assert all(p.is_file() for p in data.paths) and "fake" in data.meta["label_source"]
    with pytest.raises(FileExistsError):
        D.build_matched_outcomes(tmp_path / "h", types.SimpleNamespace(source="fake"), pool=40, k=5)
    monkeypatch.setattr(api, "transcribe", lambda model, paths, **kw: [""] * len(paths))  # never right
    with pytest.raises(ValueError, match="enlarge --pool"):
        D.build_matched_outcomes(tmp_path / "h2", types.SimpleNamespace(source="fake"), pool=6, k=5)


def _random_model():
    import jax
    import jax.numpy as jnp

    from jaxasr_interp.weights.layout import param_shapes
    from jaxasr_interp.whisper.api import Model, default_tokenizer_file
    from jaxasr_interp.whisper.config import Dims
    from jaxasr_interp.whisper.tokenizer import WhisperTokenizer
    dims = Dims(n_mels=80, n_audio_ctx=1500, n_audio_state=14, n_audio_head=2, n_audio_layer=2,
                n_vocab=51864, n_text_ctx=24, n_text_state=14, n_text_head=2, n_text_layer=3)
    leaves, tree = jax.tree_util.tree_flatten(param_shapes(dims), is_leaf=lambda s: isinstance(s, tuple))
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_unflatten(tree, [jnp.asarray(0.3 * rng.standard_normal(s), jnp.float32)
                                                 for s in leaves])
    tok = WhisperTokenizer.from_file(default_tokenizer_file(dims), multilingual=False)
    return Model(params, dims, tok, "random-test-model")


def test_experiment_end_to_end_writes_the_schema_and_reruns_bit_identically(tmp_path):
    """12 items per task (a small random Whisper: the pipeline, not the numbers, is tested)."""
    from jaxasr_interp.experiments.probing_nested import run_probes
    config = dict(seed=0, work=str(tmp_path / "work"), chunk_size=8, outer_folds=3, inner_folds=2,
                  l2=[0.01, 0.1], n_boot=50, tasks=dict(
                      gender=dict(builder="gender-engines", n_per_class=6, engines=["espeak-ng", "flite", "festival"],
                                  target="gender", groups="speaker", held_out=["engine", "speaker"]),
                      hallucination=dict(builder="hard-pool", pool=12, target="outcome", min_error_wer=0.0,
                                         groups="transcript", length_matched=True)))
    model = _random_model()
    first = run_probes(config, model, tmp_path / "a", config_path="c.json").read_bytes()
    again = run_probes(config, model, tmp_path / "a", config_path="c.json").read_bytes()
    assert first == again
    res = json.loads(first)
    gender = res["tasks"]["gender"]
    assert gender["n"] == 12 and gender["majority"] == 0.5
    assert len(gender["layers"]) == 5  # 2 encoder + 3 decoder layers
    for key in ("accuracy", "control", "selectivity"):
        assert set(gender["layers"][0][key]) == {"value", "lo", "hi", "n"}
        assert gender["best"][key]["lo"] <= gender["best"][key]["value"] <= gender["best"][key]["hi"]
    assert set(gender["held_out"]["engine"]) <= {"espeak-ng", "flite", "festival"}
    assert gender["held_out"]["speaker"]["n"] == 12
    halluc = res["tasks"]["hallucination"]  # a random model is never right: too few to probe
    assert "skipped" in halluc and halluc["pool"]["pool"] == 12
    assert "skipped" in halluc["length_matched"] and "word count" in halluc["length_matched"]["pool"]["matching"]
    # the same work folder with a config asking for other sizes: an error, not the old data
    bigger = json.loads(json.dumps(config))
    bigger["tasks"]["hallucination"]["pool"] = 24
    with pytest.raises(ValueError, match=r"built with n 12 \(config: 24\).*delete"):
        run_probes(bigger, model, tmp_path / "b", config_path="c.json")
    bigger["tasks"]["hallucination"]["pool"] = 12
    bigger["tasks"]["gender"]["engines"] = ["festival", "flite", "espeak-ng"]  # order is no change
    assert json.loads(run_probes(bigger, model, tmp_path / "b", config_path="c.json").read_bytes())["tasks"] == res["tasks"]
