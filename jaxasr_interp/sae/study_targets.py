"""The SAE study's detection targets (:mod:`jaxasr_interp.sae.study`, parts 3 and 5): per target
and layer the best latents by AUROC, the cross-validated best single latent and the linear probe
on the same pooled features; accent one-vs-rest and 4-way; the model's own errors."""

from __future__ import annotations

import numpy as np

from jaxasr_interp.core.stats import bootstrap_ci, interval
from jaxasr_interp.sae import separation as S

TARGETS = {"speech": ("speech", "speech"), "noisy": ("noise", "noisy"), "gender": ("noise", "female"),
           "rate": ("noise", "fast")}  # target -> (dataset, positive class)
EXTRA_TARGETS = ("accent", "error")  # on the noise set, computed after the rest (module docstring, 5.)


def _auroc_ci(x, y) -> dict:
    def stat(a):
        return S.auroc(a[:, :1], a[:, 1])[0] if 0 < a[:, 1].sum() < len(a) else np.nan
    return interval(bootstrap_ci(np.column_stack([x, y]), stat), len(y))


def _proportion_ci(accuracy: float, n: int) -> dict:
    hits = int(round(accuracy * n))
    return interval(bootstrap_ci(np.r_[np.ones(hits), np.zeros(n - hits)]), n)


def _detection(means, y, seeds, names, folds, n_list: int = 5) -> dict:
    """Top latents by ``|AUROC - 0.5|``, the best one's AUROC for the class it fires on (with
    its interval), and the cross-validated best single latent's accuracy."""
    au = S.auroc(means, y)
    order = np.argsort(-np.abs(au - 0.5), kind="stable")
    correct, chosen = S.cv_single_latent(means, y, k=folds, seeds=seeds)
    best = int(order[0])
    up = bool(au[best] >= 0.5)
    return dict(top_latents=[dict(latent=int(j), auroc=round(float(au[j]), 4)) for j in order[:n_list]],
                best_auroc=dict(latent=best, fires_for=names[int(up)],
                                auroc=_auroc_ci(means[:, best], y if up else 1 - y)),
                cv_single_latent=dict(accuracy=interval(bootstrap_ci(correct), len(y)),
                                      chosen=np.bincount(chosen).argmax().item(),
                                      chosen_share=float(np.bincount(chosen).max() / len(chosen))))


def _binary(dataset, positive, names, y, idx, means, pooled, layers, seeds) -> dict:
    """One binary target (positive ``y == 1``) on the clips ``idx`` of the store: per layer the
    latents' detection and the linear probe on the same folds and seeds; skipped under 2 items
    in a class."""
    from jaxasr_interp.probes.sweep import probe_sweep
    folds = min(5, int(np.bincount(y, minlength=2).min()))
    if folds < 2:
        return dict(dataset=dataset, positive=positive, n=len(y), counts=np.bincount(y, minlength=2).tolist(),
                    skipped="under 2 items in a class")
    probe = probe_sweep(pooled[:, idx], y[None], k=folds, seeds=seeds).summary()
    rows = []
    for li, layer in enumerate(layers):
        p = probe[li]
        rows.append(dict(layer=layer, **_detection(means[li][idx], y, seeds, names, folds),
                         probe=dict(accuracy=_proportion_ci(p["accuracy"], len(y)),
                                    control=round(p["control_accuracy"], 4), l2=p["l2"])))
    return dict(dataset=dataset, positive=positive, n=len(y), counts=np.bincount(y).tolist(),
                folds=folds, chance=round(float(max(y.mean(), 1 - y.mean())), 4), layers=rows)


def _targets(names, data, offsets, means, pooled, layers, seeds) -> dict:
    out = {}
    for name in names:
        dataset, positive = TARGETS[name]
        labels, classes = data[dataset].encoded(name if dataset == "noise" else "speech")
        y = (labels == classes.index(positive)).astype(np.int32)
        idx = offsets[dataset] + np.arange(len(y))
        out[name] = _binary(dataset, positive, ("/".join(c for c in classes if c != positive), positive), y, idx,
                            means, pooled, layers, seeds)
    return out


def _accent(noise, offset, means, pooled, layers, seeds) -> tuple[dict, dict]:
    """``({"accent:<class>": one-vs-rest target}, 4-way summary)`` on the noise set, one
    one-vs-rest target per accent class present (the classes' order of the dataset)."""
    from jaxasr_interp.probes.sweep import probe_sweep
    labels, classes = noise.encoded("accent")
    idx = offset + np.arange(len(labels))
    present = [c for i, c in enumerate(classes) if (labels == i).any()]
    out = {}
    for c in present:
        y = (labels == classes.index(c)).astype(np.int32)
        out[f"accent:{c}"] = _binary("noise", c, ("other", c), y, idx, means, pooled, layers, seeds)
    y = np.searchsorted([classes.index(c) for c in present], labels).astype(np.int32)  # present classes 0..C-1
    counts = np.bincount(y, minlength=len(present))
    multi = dict(dataset="noise", classes=present, n=len(y), counts=counts.tolist(),
                 chance=round(float(counts.max() / len(y)), 4))
    folds = min(5, int(counts.min()))
    if len(present) < 2 or folds < 2:
        return out, dict(multi, skipped="under 2 classes, or under 2 items in a class")
    probe = probe_sweep(pooled[:, idx], y[None], k=folds, seeds=seeds).summary()
    rows = []
    for li, layer in enumerate(layers):
        correct, chosen = S.cv_single_latent_multiclass(means[li][idx], y, k=folds, seeds=seeds)
        rows.append(dict(layer=layer,
                         cv_single_latent=dict(accuracy=interval(bootstrap_ci(correct), len(y)),
                                               chosen=np.bincount(chosen).argmax().item(),
                                               chosen_share=float(np.bincount(chosen).max() / len(chosen))),
                         probe=dict(accuracy=_proportion_ci(probe[li]["accuracy"], len(y)),
                                    balanced_accuracy=round(probe[li]["balanced_accuracy"], 4),
                                    control=round(probe[li]["control_accuracy"], 4), l2=probe[li]["l2"])))
    return out, dict(multi, folds=folds, layers=rows)


MIN_ERROR_CLASS = 5  # the error target is skipped when "correct" or "error" has fewer items


def _transcribe(model, paths, max_new_tokens: int) -> list[str]:
    """The study model's greedy transcripts (``jai.transcribe``, batched); a seam for tests."""
    from jaxasr_interp.whisper.api import transcribe
    return transcribe(model, paths, max_new_tokens=max_new_tokens)


def _wer(reference: str, hypothesis: str) -> float:
    """WER after Whisper's English normaliser (:mod:`jaxasr_interp.whisper.text_metrics`)."""
    from jaxasr_interp.whisper.text_metrics import normalize, rate, word_errors
    return rate(*word_errors(normalize(reference, "english"), normalize(hypothesis, "english")))


def _noise_transcripts(model, noise, max_new_tokens: int) -> dict:
    """Per noise-set clip: the model's greedy transcript, its WER against the reference, and the
    clip's noisy and rate labels (the error target's confounds)."""
    texts = _transcribe(model, [str(p) for p in noise.paths], max_new_tokens)
    items = [dict(path=r["path"], reference=r["transcript"], text=t.strip(), wer=round(_wer(r["transcript"], t), 4),
                  noisy=r["noisy"], rate=r["rate"]) for r, t in zip(noise.rows, texts)]
    return dict(normaliser="english", max_new_tokens=max_new_tokens, items=items)


def _error(transcripts, offset, means, pooled, layers, seeds, noisy_y) -> dict:
    """The error target (positive: WER > 0) on the noise set; beside it, per layer, how well
    the ``noisy`` target's best latent (largest ``|AUROC - 0.5|`` for noisy) ranks error."""
    items = transcripts["items"]
    y = np.asarray([it["wer"] > 0 for it in items], np.int32)
    idx = offset + np.arange(len(y))
    by = {key: {v: dict(correct=sum(1 for it, e in zip(items, y) if it[key] == v and not e),
                        error=sum(1 for it, e in zip(items, y) if it[key] == v and e))
                for v in sorted({it[key] for it in items})} for key in ("noisy", "rate")}
    counts = np.bincount(y, minlength=2)
    base = dict(dataset="noise", positive="error", n=len(y), counts=counts.tolist(),
                by_noisy=by["noisy"], by_rate=by["rate"])
    if counts.min() < MIN_ERROR_CLASS:
        return dict(base, skipped=f"under {MIN_ERROR_CLASS} items in a class (correct {counts[0]}, error {counts[1]})")
    out = {**base, **_binary("noise", "error", ("correct", "error"), y, idx, means, pooled, layers, seeds)}
    for li, row in enumerate(out["layers"]):
        x = means[li][idx]
        au = S.auroc(x, noisy_y)
        j = int(np.argsort(-np.abs(au - 0.5), kind="stable")[0])  # the noisy target's best latent
        up = bool(S.auroc(x[:, j:j + 1], y)[0] >= 0.5)
        row["noisy_latent"] = dict(latent=j, fires_for="error" if up else "correct",
                                   auroc=_auroc_ci(x[:, j], y if up else 1 - y))
    return out
