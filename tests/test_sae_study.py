"""The SAE study's added targets (accent one-vs-rest and 4-way, the model's own errors) at a
tiny size: their structure, the error target's skip rule, and the one-latent 4-way rule."""

import json

import numpy as np
import pytest

from jaxasr_interp.sae import separation as S
from jaxasr_interp.sae import study, study_report, study_targets
from test_sae_inspect import model  # noqa: F401  (the random test model fixture)


def _check_ci(ci, n, lo=0.0, hi=1.0):
    assert set(ci) == {"value", "lo", "hi", "n"} and ci["n"] == n
    assert lo <= ci["lo"] <= ci["value"] <= ci["hi"] <= hi


def _check_binary(t, n, layers):
    assert t["n"] == n and sum(t["counts"]) == n and len(t["counts"]) == 2 and 0.5 <= t["chance"] <= 1
    assert [r["layer"] for r in t["layers"]] == layers
    for r in t["layers"]:
        _check_ci(r["best_auroc"]["auroc"], n)
        _check_ci(r["cv_single_latent"]["accuracy"], n)
        _check_ci(r["probe"]["accuracy"], n)
        assert 0 <= r["probe"]["control"] <= 1 and 0 < r["cv_single_latent"]["chosen_share"] <= 1
        assert all(0 <= x["auroc"] <= 1 for x in r["top_latents"])


def test_study_added_targets_at_a_tiny_size(model, tmp_path, monkeypatch):  # noqa: F811
    real = study_targets._transcribe
    seen = {}

    def transcribe(m, paths, max_new_tokens):  # the real call, then the first 5 clips made correct
        texts = real(m, paths, max_new_tokens)
        seen.update(n=len(texts), max_new_tokens=max_new_tokens)
        rows = study._datasets(tmp_path / "work", 5, 0, {"noise"})["noise"].rows
        return [r["transcript"] if i < 5 else "" for i, r in enumerate(rows)]

    monkeypatch.setattr(study_targets, "_transcribe", transcribe)
    result = study.run(model, tmp_path / "results", work=tmp_path / "work", layers=[1],
                       targets=("noisy", "accent", "error"), n=5, expansion=2, k=3, steps=3, batch=64, top=2,
                       ablate_top=2, controls=1, factors=(4.0,), max_new_tokens=3, seeds=(0,), progress=False)
    saved = json.loads((tmp_path / "results" / "sae_study_random-test-model.json").read_text())
    assert saved == json.loads(json.dumps(result)) and saved["n_clips"] == 20
    assert seen == dict(n=10, max_new_tokens=3)
    rows = study._datasets(tmp_path / "work", 5, 0, {"noise"})["noise"].rows
    accents = sorted({r["accent"] for r in rows})
    names = list(saved["targets"])
    assert names[0] == "noisy" and names[-1] == "error"  # the earlier targets first
    assert sorted(n.split(":")[1] for n in names if n.startswith("accent:")) == accents
    for c in accents:
        t = saved["targets"][f"accent:{c}"]
        assert t["positive"] == c and t["counts"][1] == sum(r["accent"] == c for r in rows)
        _check_binary(t, 10, [1])
    multi = saved["accent_4way"]
    assert multi["classes"] == [c for c in ["us", "gb-rp", "scottish", "caribbean"] if c in accents]
    assert sum(multi["counts"]) == 10 and multi["counts"] == [sum(r["accent"] == c for r in rows)
                                                              for c in multi["classes"]]
    (r,) = multi["layers"]
    _check_ci(r["cv_single_latent"]["accuracy"], 10)
    _check_ci(r["probe"]["accuracy"], 10)
    assert 0 <= r["probe"]["balanced_accuracy"] <= 1
    # the model's own errors: per clip text and WER, 5 correct (the references) and 5 errors
    items = saved["noise_transcripts"]["items"]
    assert [it["path"] for it in items] == [r["path"] for r in rows] and saved["noise_transcripts"]["max_new_tokens"] == 3
    assert [it["wer"] == 0 for it in items] == [True] * 5 + [False] * 5
    err = saved["targets"]["error"]
    assert err["counts"] == [5, 5] and err["positive"] == "error"
    _check_binary(err, 10, [1])
    for by in (err["by_noisy"], err["by_rate"]):
        assert sum(c["correct"] for c in by.values()) == 5 and sum(c["error"] for c in by.values()) == 5
    assert set(err["by_noisy"]) == {"clean", "noisy"}
    _check_ci(err["layers"][0]["noisy_latent"]["auroc"], 10)
    assert err["layers"][0]["noisy_latent"]["latent"] == saved["targets"]["noisy"]["layers"][0]["best_auroc"]["latent"]
    text = study.markdown(saved)
    assert all(f"| accent:{c} ({c}, 10) | 1 |" in text for c in accents)
    assert "| error (error, 10) | 1 |" in text and "| accent, multiclass" in text and "noisy target's best latent" in text
    from test_docs_numbers import NUMBER, _derivable, _leaves  # every number of the tables is in the file
    values = set(_leaves(saved))
    assert all(_derivable(token, values) for token in NUMBER.findall(text))


def test_error_target_skips_a_class_under_five():
    rng = np.random.default_rng(0)
    n = 12
    items = [dict(wer=0.5 if i < 3 else 0.0, noisy="noisy" if i % 2 else "clean", rate="fast") for i in range(n)]
    means = [rng.random((n, 6))]
    out = study_targets._error(dict(items=items), 0, means, rng.random((1, n, 4)).astype(np.float32), [1], (0,),
                               np.arange(n) % 2)
    assert out["counts"] == [9, 3] and "skipped" in out and "layers" not in out
    assert out["by_noisy"] == {"clean": dict(correct=4, error=2), "noisy": dict(correct=5, error=1)}
    (line,) = [x for x in study_report._added_markdown(dict(model="m", targets={"error": out})) if x]
    assert "error (WER > 0) on 3 of 12" in line and "clean: 2 error, 4 correct" in line


def test_cv_single_latent_multiclass_finds_the_planted_latent():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    x = rng.standard_normal((40, 7))
    x[:, 3] = 5.0 * y + 0.1 * rng.standard_normal(40)
    correct, chosen = S.cv_single_latent_multiclass(x, y, k=5, seeds=(0, 1))
    assert correct.mean() == 1.0 and set(chosen) == {3}
    acc, means = S.nearest_mean_rule(x, y, 5)  # an absent class is never predicted
    assert acc[3] == 1.0 and np.isinf(means[4]).all()
    with pytest.raises(ValueError):
        study.run(None, "x", targets=("accents",))
