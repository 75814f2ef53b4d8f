"""Probes: planted signal found where planted only, scikit-learn parity, determinism, errors."""

import numpy as np
import pytest

from jaxasr_interp.probes.sweep import planted_features, probe_sweep, stratified_folds

N, LAYERS, DIM = 240, 5, 24
PLANTED = 3


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(7)
    labels = np.stack([rng.permutation(np.arange(N) % 2), rng.permutation(np.arange(N) % 3)])
    features = planted_features(labels, LAYERS, DIM, layers=[PLANTED], strength=3.0, seed=1)
    result = probe_sweep(features, labels, k=4, seeds=(0, 1), l2=(1e-2, 1e-1))
    return labels, features, result


def test_planted_signal_only_at_planted_layer(planted):
    _, _, res = planted
    for t, n_classes in enumerate((2, 3)):
        acc = res.accuracy[:, t].mean(axis=(1, 2))  # over seeds and strengths
        chance = 1.0 / n_classes
        assert acc[PLANTED] > 0.9, acc
        others = np.delete(acc, PLANTED)
        # 240 items: the standard error of a chance accuracy is about 0.03; allow 3.5 of them.
        assert np.all(np.abs(others - chance) < 0.11), (others, chance)
        control = res.control_accuracy[:, t].mean(axis=(1, 2))
        assert np.all(np.abs(control - chance) < 0.11), control
        bal = res.balanced_accuracy[:, t].mean(axis=(1, 2))
        assert abs(bal[PLANTED] - acc[PLANTED]) < 0.03  # balanced classes: the two agree


def test_summary_rows_pick_the_planted_layer(planted):
    _, _, res = planted
    rows = res.summary()
    assert len(rows) == 2 * LAYERS
    for t in (0, 1):
        mine = [r for r in rows if r["target"] == t]
        best = max(mine, key=lambda r: r["accuracy"])
        assert best["layer"] == PLANTED
        assert best["l2"] in (1e-2, 1e-1)
        assert abs(best["chance"] - 1.0 / (2 + t)) < 1e-9


def test_bit_identical_for_a_fixed_seed(planted):
    labels, features, res = planted
    again = probe_sweep(features, labels, k=4, seeds=(0, 1), l2=(1e-2, 1e-1))
    for name in ("accuracy", "balanced_accuracy", "control_accuracy", "control_balanced_accuracy"):
        assert np.array_equal(getattr(res, name), getattr(again, name)), name
    other = probe_sweep(features, labels, k=4, seeds=(5, 6), l2=(1e-2, 1e-1))
    assert not np.array_equal(res.control_accuracy, other.control_accuracy)


def _sklearn_accuracy(x, y, folds, l2):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    correct = 0
    for k in np.unique(folds):
        train = folds != k
        scaler = StandardScaler().fit(x[train])
        model = LogisticRegression(C=1.0 / (l2 * train.sum()), max_iter=2000)
        model.fit(scaler.transform(x[train]), y[train])
        correct += (model.predict(scaler.transform(x[~train])) == y[~train]).sum()
    return correct / len(y)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_accuracy_equals_sklearn_within_one_point(n_classes):
    rng = np.random.default_rng(n_classes)
    n, layers, dim, l2 = 300, 3, 32, 1e-2
    labels = rng.permutation(np.arange(n) % n_classes)
    # A weak planted signal keeps accuracies away from 100%, where parity would be trivial.
    features = planted_features(labels, layers, dim, layers=[1, 2], strength=0.9, seed=3)
    res = probe_sweep(features, labels, k=5, seeds=(0,), l2=(l2,))
    folds = stratified_folds(labels, 5, 0)
    for layer in range(layers):
        ours = res.accuracy[layer, 0, 0, 0]
        theirs = _sklearn_accuracy(features[layer], labels, folds, l2)
        assert abs(ours - theirs) <= 0.01, (layer, ours, theirs)
    assert res.accuracy[1:, 0, 0, 0].min() > 1.0 / n_classes + 0.1  # the comparison has signal


def test_stratified_folds_balance_every_class():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    folds = stratified_folds(labels, 5, seed=0)
    for c, count in zip(range(3), (50, 30, 20)):
        per_fold = np.bincount(folds[labels == c], minlength=5)
        assert per_fold.tolist() == [count // 5] * 5
    assert np.array_equal(folds, stratified_folds(labels, 5, seed=0))


@pytest.mark.parametrize("labels, match", [
    (np.zeros((1, 20), int), "single class"),
    (np.array([[0, 1] * 10]), "at least 2 folds"),
    (np.array([[0] * 18 + [1, 1]]), "at least 5 items of every class"),
    (np.zeros((1, 7), int), "items=20"),
])
def test_bad_input_is_a_clear_error(labels, match):
    features = np.zeros((2, 20, 3), np.float32)
    k = 1 if match == "at least 2 folds" else 5
    with pytest.raises(ValueError, match=match):
        probe_sweep(features, labels, k=k)


def test_cli_probe_bad_input_is_one_error_line(tmp_path, capsys):
    from jaxasr_interp.cli.main import main

    assert main(["probe", "--data", str(tmp_path), "--target", "gender", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path} is not a dataset: dataset.json is missing (see jaxasr_interp.data)"
    assert main(["experiment", "probe-noise", "--out", str(tmp_path / "o"), "--n", "3"]) == 2
    assert "at least the 5 items per class" in capsys.readouterr().err
    assert main(["experiment", "probe-noise", "--out", str(tmp_path / "o"), "--n", "1", "--folds", "2"]) == 2
    assert "at least the 2 items per class that 2-fold" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["experiment", "probe-nothing", "--out", str(tmp_path)])
