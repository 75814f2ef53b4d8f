"""The contextual-bias controls: the matched-norm random perturbation, the pair split and the
run end to end at a tiny size (tiny.en, 2 pairs, 1 family, 2 alphas, 3 seeds)."""

import json

import numpy as np
import pytest

from jaxasr_interp.experiments.contextual_bias_controls import main, matched_random, split_halves
from jaxasr_interp.experiments.contextual_bias_controls_report import choose, docs_table, split_half


@pytest.mark.parametrize("shape", [(3, 7, 5), (2, 5, 3, 4)])
def test_matched_random_has_the_delta_norm_at_every_position(shape):
    rng = np.random.default_rng(1)
    delta = rng.standard_normal(shape) * rng.uniform(0.1, 10, shape[:-1] + (1,))
    r = matched_random(delta, np.random.default_rng(2))
    np.testing.assert_allclose(np.linalg.norm(r, axis=-1), np.linalg.norm(delta, axis=-1), rtol=1e-6)
    cos = np.sum(r * delta, -1) / np.linalg.norm(r, axis=-1) / np.linalg.norm(delta, axis=-1)
    assert np.abs(cos).mean() < 0.9  # a new direction, not the delta
    np.testing.assert_array_equal(r, matched_random(delta, np.random.default_rng(2)))


def test_split_never_puts_a_pair_on_both_sides():
    groups = np.repeat([f"p{i}" for i in range(9)], [1, 3, 2, 4, 1, 1, 2, 3, 5])
    for seed in range(5):
        a, b = split_halves(groups, seed)
        assert sorted(np.concatenate([a, b]).tolist()) == list(range(len(groups)))
        assert not set(groups[a]) & set(groups[b])
        assert len(set(groups[a])) == 4 and len(set(groups[b])) == 5


def test_the_chosen_cell_comes_from_the_selection_half_only():
    groups = np.array(["x", "x", "y", "y"])
    a, b = split_halves(groups, 0)
    metas = [dict(family="encoder.mlp", layer=k, head=None, alpha=1.0) for k in range(2)]
    mean = np.zeros((4, 2))
    mean[a, 0] = 1.0  # cell 0 wins on one half, cell 1 on the other
    mean[b, 1] = 1.0
    out = split_half(mean, np.zeros_like(mean), metas, groups, 0)
    first, second = out["folds"]
    assert first["chosen"]["any"]["layer"] == 0 and second["chosen"]["any"]["layer"] == 1
    assert first["chosen"]["any"]["evaluation"]["value"] == 0.0  # chosen without seeing the half it is scored on
    assert out["held_out"]["any"]["patch"]["value"] == 0.0 and out["held_out"]["any"]["patch"]["n"] == 4
    assert choose(np.array([0.2, 0.5]), metas, "decoder") is None


def test_run_end_to_end_is_bit_identical_on_rerun(tmp_path):
    cfg = dict(pairs=["lice/rice", "fry/fly"], families=["decoder.mlp"], alphas=[0.5, 1.0], seeds=[0, 1, 2],
               max_new_tokens=24)
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    argv = ["--config", str(tmp_path / "c.json"), "--model", "tiny.en", "--out", str(tmp_path / "out"),
            "--work", str(tmp_path / "work")]
    texts = []
    for _ in range(2):  # the rerun resumes from the work directory (2-core CI: no second sweep)
        r = main(argv)
        texts.append((tmp_path / "out" / "contextual_bias_tiny.en.json").read_bytes())
    assert texts[0] == texts[1]
    assert r["n_sentences"] == 8 and r["n_errors"] >= 1 and r["counts"]["contextual"] >= r["n_errors"]
    assert len(r["cells"]) == 4 * 2  # tiny.en: 4 decoder layers x 2 alphas
    for c in r["cells"]:
        assert len(c["per_seed"]) == 3 and c["flipped"]["n"] == r["n_errors"]
        assert set(c["random"]) == {"value", "lo", "hi", "n"}
    assert {"folds", "held_out"} <= set(r["split_half"]) and r["rates"]["contextual"]["n"] == 8
    for fold in r["split_half"]["folds"]:
        assert not set(fold["selection_pairs"]) & set(fold["evaluation_pairs"])
    assert "| split half" in docs_table(r)
