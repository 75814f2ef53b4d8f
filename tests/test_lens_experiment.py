"""The lens experiment (jaxasr_interp/experiments/lenses.py) end to end at a tiny size, and
the separation of special-token positions from the text-token statistics on hand-built cases."""

import json
from pathlib import Path

import numpy as np

from jaxasr_interp.experiments import lenses as LX
from jaxasr_interp.experiments import lenses_report as R

ROOT = Path(__file__).resolve().parents[1]
CFG = {"bootstrap": {"n_boot": 50, "seed": 0}, "tuned_lens": {"steps": 2, "lr": 1e-3, "weight_decay": 1e-4}}
EOT = 100


def _small_config(path: Path) -> Path:
    cfg = json.loads((ROOT / "configs" / "lenses.json").read_text())
    cfg.update(real={"bundled": 1, "pocketsphinx": 1}, synth={"espeak-ng": 1}, bootstrap={"n_boot": 50, "seed": 0},
               encoder_lens={"runs": ["plain"], "max_new_tokens": 12, "batch_size": 3},
               tuned_lens={"steps": 2, "lr": 1e-3, "weight_decay": 1e-4}, models={})
    path.write_text(json.dumps(cfg))
    return path


def test_tiny_run_writes_the_schema_and_reruns_identically(tmp_path):
    argv = ["--config", str(_small_config(tmp_path / "c.json")), "--model", "tiny.en", "--work", str(tmp_path / "w")]
    LX.main(argv + ["--out", str(tmp_path / "a")])
    LX.main(argv + ["--out", str(tmp_path / "b")])  # resumed: every stage read back
    first = (tmp_path / "a" / "lenses_tiny.en.json").read_bytes()
    assert first == (tmp_path / "b" / "lenses_tiny.en.json").read_bytes()
    res = json.loads(first)
    assert res["n_clips"] == 3 and [c["source"] for c in res["clips"]] == ["bundled", "pocketsphinx", "espeak-ng"]
    assert res["tuned_lens"]["n_heldout_clips"] == 3 and res["tuned_lens"]["folds"] == 2  # cross-fitted: every clip
    assert res["tuned_lens"]["n_text_positions"] == sum(c["n_text"] for c in res["clips"])
    layers = res["dims"]["n_text_layer"]
    sat = res["saturation"]
    assert sat["text"]["n_positions"] == sum(c["n_text"] for c in res["clips"]) > 0
    assert sat["prompt"]["n_positions"] == sum(c["n_prompt"] for c in res["clips"]) > 0
    assert sat["eot"]["n_positions"] == 3
    assert len(sat["text"]["distribution"]) == layers + 1
    assert abs(sum(d["value"] for d in sat["text"]["distribution"]) - 1) < 1e-5
    wer = res["encoder_lens"]["plain"]["wer"]
    assert len(wer) == res["dims"]["n_audio_layer"] and all(w["lo"] <= w["value"] <= w["hi"] and w["n"] == 3 for w in wer)
    tl = res["tuned_lens"]
    assert len(tl["kl_plain"]) == len(tl["kl_tuned"]) == layers
    assert abs(tl["gain"]["value"] - (tl["saturation_plain"]["value"] - tl["saturation_tuned"]["value"])) < 1e-5
    table = LX.docs_table(res)
    assert "| encoder layer |" in table and "gain (plain - tuned)" in table


def test_crossfit_folds_score_every_clip_once_by_a_translator_that_never_saw_it():
    held = LX.heldout_mask(37, {"heldout_fraction": 0.5, "seed": 0})
    folds = LX.crossfit_folds(held)
    assert len(folds) == 2
    for train, test in folds:
        assert not set(train) & set(test)
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested.tolist()) == list(range(37))
    assert folds[0][1].tolist() == np.nonzero(held)[0].tolist()  # fold 0 is the split as before


def test_position_kinds_name_what_each_position_predicts():
    seq = [EOT + 1, EOT + 2, 5, 6, 7, EOT]  # sot, notimestamps, three text tokens, eot
    assert R.position_kinds(seq, 2, EOT).tolist() == ["prompt", "text", "text", "text", "eot", ""]
    assert R.position_kinds([EOT + 1, 3, EOT + 7, EOT], 1, EOT).tolist() == ["text", "special", "eot", ""]


def test_special_positions_never_enter_text_statistics():
    seqs = [[EOT + 1, EOT + 2, 5, 6, 7, EOT], [EOT + 1, EOT + 2, 8, EOT]]
    kinds = [R.position_kinds(s, 2, EOT) for s in seqs]
    # text positions saturate at 0 or 1; prompt, eot and the last position at "never" (3)
    sats = [np.array([3, 0, 1, 0, 3, 3]), np.array([3, 1, 3, 3])]
    out = R.saturation_stats(sats, kinds, 3, CFG)
    assert out["text"]["n_positions"] == 4 and out["prompt"]["n_positions"] == 2 and out["eot"]["n_positions"] == 2
    assert out["text"]["mean"]["value"] == 0.5 and out["text"]["histogram"] == [2, 2, 0, 0]
    assert out["prompt"]["mean"]["value"] == 3 and out["eot"]["mean"]["value"] == 3
    assert [d["value"] for d in out["text"]["distribution"]] == [0.5, 0.5, 0, 0]
    kl = [np.where(k == "text", 1.0, 50.0)[None].repeat(3, 0) for k in kinds]
    plain = [dict(saturation=s, kl=k) for s, k in zip(sats, kl)]
    tuned = [dict(saturation=np.where(k == "text", 0, 3), kl=x * 0.5) for k, x in zip(kinds, kl)]
    tl = R.tuned_stats(plain, tuned, kinds, [np.array([2.0, 1.0]), np.array([3.0, 1.5])], CFG)
    assert tl["n_text_positions"] == 4 and tl["folds"] == 2
    assert tl["loss_first"] == [2.0, 3.0] and tl["loss_last"] == [1.0, 1.5]
    assert tl["saturation_plain"]["value"] == 0.5 and tl["saturation_tuned"]["value"] == 0
    assert tl["gain"]["value"] == 0.5
    assert [k["value"] for k in tl["kl_plain"]] == [1.0] * 3 and [k["value"] for k in tl["kl_gain"]] == [0.5] * 3


def test_fill_marker_replaces_only_its_own_block():
    text = ("a\n<!-- table:lenses_base results/lenses_base.json -->\nold\n<!-- /table -->\n"
            "<!-- table:lenses_tiny.en results/lenses_tiny.en.json -->\nkeep\n<!-- /table -->\n")
    out = R.fill_marker(text, "base", "new\n")
    assert out == text.replace("old\n", "new\n")
    try:
        R.fill_marker("no markers", "base", "x")
    except ValueError as e:
        assert "lenses_base" in str(e)
    else:
        raise AssertionError("a missing marker must be an error")
