"""Repetition hallucinations: find utterances where the model loops, then patch the
cross-attention of every decoder layer and every cross-attention head towards a white-noise
reference over an alpha grid and count the loops each patch resolves.

Pool (:func:`candidate_pool`, deterministic for a seed): long stretches of real speech (the
bundled LibriVox/JFK clips and, when installed, the pocketsphinx test "cards" clips,
concatenated in seeded random orders to about 24 s, so that the decoder must write ~80 tokens)
under pink noise at -5 dB SNR, white noise at -5 dB, and pink noise at -8 dB. Measured: tiny.en
never loops on the single short clips, clean, noisy, truncated or clipped (tried while building
this); long noisy windows are what make it loop, and the noise level is the documented knob
that induces more loops. Or the user's own files (:func:`items_from_audio`): each one's first
30 s, with no reference text; the ones that do not loop are listed as ``no_loop``.

Each item is transcribed greedily (plain argmax, ``max_new_tokens`` tokens). It *loops* when
:func:`.patching_decode.has_repetition` holds for the transcript and not for the item's
reference text. A patch *resolves* a loop when the patched transcript does not loop and is
intact: its WER against the clean transcript with the loop kept once
(:func:`.patching_decode.collapse_repeats`) is at most ``intact_wer``.

Patches (one :func:`.patching_decode.decode_sweep` per item, one compiled program for all
items): ``cross_attn_out`` of each layer x alpha, ``cross_attn.z`` of each (layer, head) x
alpha, then the best layer and the best head together at each alpha. The reference run is the
white noise teacher-forced with the clean tokens (padded to a fixed length).
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxasr_interp.core.grid import join_sites
from jaxasr_interp.patching.decoding import collapse_repeats, decode_sweep, has_repetition, ids_to_text, word_error_rate
from jaxasr_interp.patching.reference import white_noise
from jaxasr_interp.patching.sweeps import family_grid
from jaxasr_interp.whisper.audio import SAMPLE_RATE
from jaxasr_interp.whisper.tokenizer import teacher_tokens

ALPHAS = (0.25, 0.5, 0.75, 1.0)
FAMILY_LAYER, FAMILY_HEAD = "decoder.cross_attn", "decoder.cross_head"
SITE_LAYER, SITE_HEAD = "decoder.cross_attn_out", "decoder.cross_attn.z"  # the sites they patch
PAPER = dict(layer="cross-attention of decoder layer 23 resolves 76%", head="head 13 of layer 18: 78.1%",
             pair="both together: 89%", model="large-v3 (secondary)")
CARDS = Path("/usr/share/pocketsphinx/test/data/cards")


def _real_clips() -> list[tuple[np.ndarray, str, str]]:
    from jaxasr_interp.whisper.audio import load_audio, sample_path, sample_transcripts
    clips = [(load_audio(sample_path(n)), t, n) for n, t in sample_transcripts().items()]
    if (CARDS / "cards.transcription").is_file():
        for line in (CARDS / "cards.transcription").read_text().splitlines():
            text, ident = line.replace("<s>", "").replace("</s>", "").rsplit("(", 1)
            path = CARDS / f"{ident.strip(') ')}.wav"
            if path.is_file():
                clips.append((load_audio(path), text.strip(), f"cards/{path.name}"))
    return clips


def _variants(audio, rng):
    """(audio, description) of each degradation of one long stretch of real speech."""
    from jaxasr_interp.data import synth
    seconds = audio.size / SAMPLE_RATE
    yield synth.mix_at_snr(audio, synth.pink_noise(rng, seconds), -5.0), "+ pink noise -5 dB"
    white = white_noise(rng=rng, n_samples=int(SAMPLE_RATE * seconds))
    yield synth.mix_at_snr(audio, white, -5.0), "+ white noise -5 dB"
    yield synth.mix_at_snr(audio, synth.pink_noise(rng, seconds), -8.0), "+ pink noise -8 dB"


def candidate_pool(seed: int = 0, n_orders: int = 4, seconds: float = 24.0) -> list[dict]:
    """Candidates: dicts with ``audio``, ``text`` (reference), ``source``. Each is the real clips
    in a seeded random order, concatenated until ``seconds`` (at most 29.5 s: one window),
    under one of the noise degradations of :func:`_variants`."""
    rng = np.random.default_rng(seed)
    clips, pool = _real_clips(), []
    for _ in range(n_orders):
        parts, texts, names = [], [], []
        for i in rng.permutation(len(clips)):
            if sum(p.size for p in parts) >= seconds * SAMPLE_RATE:
                break
            parts.append(clips[i][0])
            texts.append(clips[i][1])
            names.append(clips[i][2])
        audio = np.concatenate(parts)[: int(29.5 * SAMPLE_RATE)]
        for variant, how in _variants(audio, rng):
            pool.append(dict(audio=variant, text=" ".join(texts),
                             source=f"{audio.size / SAMPLE_RATE:.1f} s of {' + '.join(names)} {how}"))
    return pool


def transcribe_pool(model, pool: list[dict], *, max_new_tokens: int, batch_size: int = 8) -> list[dict]:
    """Each item of ``pool`` with its greedy ``ids``, transcript ``clean`` and ``loops``: the
    transcript loops and the item's reference ``text`` does not."""
    from jaxasr_interp.whisper.api import transcribe_ids
    ids = transcribe_ids(model, [p["audio"] for p in pool], batch_size=batch_size,
                         max_new_tokens=max_new_tokens, progress=True)
    out = []
    for item, row in zip(pool, ids):
        text = ids_to_text(model.tokenizer, row)
        out.append({**item, "ids": row, "clean": text,
                    "loops": has_repetition(text) and not has_repetition(item["text"])})
    return out


def find_loops(model, pool: list[dict], *, max_new_tokens: int, batch_size: int = 8) -> list[dict]:
    """The items of ``pool`` whose greedy transcript loops (their reference text does not)."""
    return [it for it in transcribe_pool(model, pool, max_new_tokens=max_new_tokens, batch_size=batch_size)
            if it["loops"]]


def items_from_audio(model, paths, *, max_new_tokens: int = 96, batch_size: int = 8) -> tuple[list, list]:
    """The user's audio files (the first 30 s of each), transcribed greedily -> ``(loops,
    no_loop)``: the looping ones as items :func:`sweep` takes (``source`` = the path, no
    reference text), and ``{"audio": path, "transcript": ...}`` of each file with no loop."""
    from jaxasr_interp.whisper.audio import load_audio
    pool = [dict(audio=load_audio(p), text="", source=str(p)) for p in paths]
    items = transcribe_pool(model, pool, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return ([it for it in items if it["loops"]],
            [dict(audio=it["source"], transcript=it["clean"]) for it in items if not it["loops"]])


def resolved(patched: str, clean: str, intact_wer: float) -> bool:
    """No loop left, and the rest of the clean transcript kept."""
    return not has_repetition(patched) and word_error_rate(collapse_repeats(clean), patched) <= intact_wer


def patch_weights(dims, alphas):
    """Weights of the layer patches (layer x alpha), then the head patches (layer x head x
    alpha): {site: [P, L, ...]}, zero at the site a patch does not edit."""
    _, layer, _ = family_grid(FAMILY_LAYER, dims, alphas)
    _, head, _ = family_grid(FAMILY_HEAD, dims, alphas)
    return {site: jnp.asarray(w) for site, w in join_sites({SITE_LAYER: layer}, {SITE_HEAD: head}).items()}


def pair_weights(dims, alphas, layer: int, head: tuple[int, int]):
    """The best layer's cross-attention and the best (layer, head) together, at each alpha."""
    _, wl, _ = family_grid(FAMILY_LAYER, dims, alphas, layers=[layer])
    _, wh, _ = family_grid(FAMILY_HEAD, dims, alphas, layers=[head[0]], heads=[head[1]])
    return {SITE_LAYER: jnp.asarray(wl), SITE_HEAD: jnp.asarray(wh)}


class _Runner:
    """Everything one item's sweeps need, computed once per model."""

    def __init__(self, model, max_new_tokens: int, reference, chunk: int):
        from jaxasr_interp.whisper.api import encode_batch
        from jaxasr_interp.whisper.audio import load_audio, log_mel
        self.model, self.n_new, self.chunk = model, max_new_tokens, chunk
        self.prompt = model.tokenizer.prompt()
        noise = white_noise() if reference is None else load_audio(reference)
        self.noise_features = encode_batch(model.params, log_mel(noise, n_mels=model.dims.n_mels)[None],
                                           dims=model.dims)[0]

    def __call__(self, item, weights) -> list[str]:
        from jaxasr_interp.whisper.api import encode_batch
        from jaxasr_interp.whisper.audio import log_mel
        from jaxasr_interp.whisper.model import decode
        m, tok = self.model, self.model.tokenizer
        width = len(self.prompt) + self.n_new + 1  # fixed: one compiled program for every item
        tokens = jnp.asarray(teacher_tokens(self.prompt, item["ids"], tok.eot, width), jnp.int32)
        _, ref = decode(m.params, tokens, self.noise_features, dims=m.dims, capture=[SITE_LAYER, SITE_HEAD])
        features = encode_batch(m.params, log_mel(item["audio"], n_mels=m.dims.n_mels)[None], dims=m.dims)[0]
        ids = decode_sweep(m.params, features, jnp.asarray(self.prompt, jnp.int32), tok.eot, ref, weights,
                           dims=m.dims, max_new_tokens=self.n_new, chunk=self.chunk)
        return [ids_to_text(tok, row) for row in np.asarray(ids)]


def run(model, *, pool=None, audio=None, alphas=ALPHAS, max_items: int = 16, max_new_tokens: int = 96,
        intact_wer: float = 0.3, reference=None, seed: int = 0, chunk: int = 16) -> dict:
    """The whole experiment -> a result dict (see :func:`write_report`). The candidates are the
    user's files ``audio`` if given (paths: :func:`items_from_audio`; the result then also lists
    ``no_loop``, and has ``n_items`` 0 and a ``message`` when none loops), else ``pool``, else
    :func:`candidate_pool` of ``seed``."""
    if audio is not None:
        loops, no_loop = items_from_audio(model, audio, max_new_tokens=max_new_tokens)
        sources = [str(a) for a in audio]
    else:
        pool = candidate_pool(seed) if pool is None else pool
        loops, sources = find_loops(model, pool, max_new_tokens=max_new_tokens), [p["source"] for p in pool]
    head = dict(model=model.source, n_pool=len(sources), n_loops=len(loops), n_items=min(len(loops), max_items))
    tail = dict(pool_sources=sources, loop_sources=[it["source"] for it in loops])
    if audio is not None:
        tail["no_loop"] = no_loop
        if not loops:
            return dict(head, max_new_tokens=max_new_tokens, **tail, message=(
                f"no loop found in any of the {len(sources)} file(s) under {model.source}: nothing to patch"))
    elif not loops:
        raise ValueError(f"none of the {len(sources)} candidates loops under {model.source}; give more or harder audio")
    return dict(head, **sweep(model, loops[:max_items], alphas=alphas, max_new_tokens=max_new_tokens,
                              intact_wer=intact_wer, reference=reference, chunk=chunk), **tail)


def sweep(model, items: list[dict], *, alphas=ALPHAS, max_new_tokens: int = 96, intact_wer: float = 0.3,
          reference=None, chunk: int = 16) -> dict:
    """Patch every looping item (``audio``, ``ids``, ``clean``, ``text``, ``source``) under every
    layer and head patch, then the best layer and head together -> the rates and per-item texts."""
    dims = model.dims
    runner = _Runner(model, max_new_tokens, reference, chunk)
    weights = patch_weights(dims, alphas)
    n_l, n_h, n_a = dims.n_text_layer, dims.n_text_head, len(alphas)
    solved = np.zeros((len(items), weights[SITE_LAYER].shape[0]), bool)
    removed = np.zeros_like(solved)  # the weaker outcome: no loop left (whatever the rest says)
    texts = []
    for i, item in enumerate(tqdm(items, desc="repetition sweeps", unit="item")):
        out = runner(item, weights)
        solved[i] = [resolved(t, item["clean"], intact_wer) for t in out]
        removed[i] = [bool(t.strip()) and not has_repetition(t) for t in out]
        texts.append(out)
    layer_rate = solved[:, : n_l * n_a].mean(0).reshape(n_l, n_a)
    head_rate = solved[:, n_l * n_a:].mean(0).reshape(n_l, n_h, n_a)
    best_layer = int(np.argmax(layer_rate.max(1)))
    best_head = np.unravel_index(int(np.argmax(head_rate.max(2))), (n_l, n_h))
    pair_solved = np.zeros((len(items), n_a), bool)
    best_head = (int(best_head[0]), int(best_head[1]))
    pair = pair_weights(dims, alphas, best_layer, best_head)
    for i, item in enumerate(tqdm(items, desc="best layer + head", unit="item")):
        pair_solved[i] = [resolved(t, item["clean"], intact_wer) for t in runner(item, pair)]
    return dict(alphas=list(alphas), intact_wer=intact_wer, max_new_tokens=max_new_tokens,
                layer_rate=layer_rate, head_rate=head_rate, pair_rate=pair_solved.mean(0),
                layer_loop_removed=removed[:, : n_l * n_a].mean(0).reshape(n_l, n_a).tolist(),
                head_loop_removed=removed[:, n_l * n_a:].mean(0).reshape(n_l, n_h, n_a).tolist(),
                best_layer=best_layer, best_head=best_head,
                items=[dict(source=it["source"], text=it["text"], clean=it["clean"],
                            resolved_by=int(s.sum()), loop_removed_by=int(r.sum()), best_layer_text=t[int(np.argmax(layer_rate[best_layer])) + best_layer * n_a])
                       for it, s, r, t in zip(items, solved, removed, texts)])


def write_report(result: dict, out_dir) -> dict:
    """repetition.json (summary + per-item texts), repetition.csv (one row per patch x alpha),
    repetition_heads.png (layer x head, best alpha) and repetition_alpha.png -> the summary.
    With no looping item (the user's files, see :func:`run`): repetition.json only."""
    import json

    from jaxasr_interp.plots.patching import plot_alpha_curves, plot_head_heatmap, plot_layer_lines
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not result["n_items"]:
        summary = dict(result, csv=None, plots=[])
        (out / "repetition.json").write_text(json.dumps(summary, indent=1) + "\n")
        return summary
    alphas, lr, hr, pr = result["alphas"], result["layer_rate"], result["head_rate"], result["pair_rate"]
    (bl, (hl, hh)) = result["best_layer"], result["best_head"]
    summary = {k: v for k, v in result.items() if k not in ("layer_rate", "head_rate", "pair_rate")}
    summary.update(
        best_layer_resolved=float(lr[bl].max()), best_layer_alpha=alphas[int(np.argmax(lr[bl]))],
        best_head_resolved=float(hr[hl, hh].max()), best_head_alpha=alphas[int(np.argmax(hr[hl, hh]))],
        pair_resolved=float(pr.max()), pair_alpha=alphas[int(np.argmax(pr))], paper=PAPER,
        layer_rate=lr.tolist(), head_rate=hr.tolist(), pair_rate=pr.tolist(),
        csv=str(out / "repetition.csv"), plots=[str(out / "repetition_heads.png"), str(out / "repetition_alpha.png")])
    _write_csv(out / "repetition.csv", result)
    (out / "repetition.json").write_text(json.dumps(summary, indent=1) + "\n")
    name = f"{result['model']}: {result['n_items']} looping items"
    plot_head_heatmap(100 * hr.max(2), path=out / "repetition_heads.png", vmin=0, vmax=100, label="% resolved",
                      title=f"{name}; % of loops resolved by patching one cross-attention head (best alpha)")
    if len(alphas) > 1:
        curves = {f"layer {layer}": 100 * lr[layer] for layer in range(lr.shape[0])}
        curves[f"head {hl}.{hh}"] = 100 * hr[hl, hh]
        curves[f"layer {bl} + head {hl}.{hh}"] = 100 * pr
        plot_alpha_curves(alphas, curves, path=out / "repetition_alpha.png", ylabel="% of loops resolved",
                          title=f"{name}; cross-attention output per layer, best head, both")
    else:  # one alpha: per-layer lines instead of degenerate alpha curves
        lines = {"decoder.cross_attn_out: resolved": 100 * lr[:, 0],
                 "decoder.best head: resolved": 100 * hr[..., 0].max(1)}
        if "layer_loop_removed" in result:
            lines["decoder.cross_attn_out: loop removed"] = 100 * np.asarray(result["layer_loop_removed"])[:, 0]
            lines["decoder.best head: loop removed"] = 100 * np.asarray(result["head_loop_removed"])[..., 0].max(1)
        plot_layer_lines(lines, path=out / "repetition_alpha.png", ylabel="% of loops", ylim=(-3, 103),
                         title=f"{name}; alpha {alphas[0]}; pair layer {bl} + head {hl}.{hh}: {100 * pr[0]:.0f}%")
    return summary


def _write_csv(path, result: dict) -> None:
    import csv
    alphas, lr, hr, pr, n = (result[k] for k in ("alphas", "layer_rate", "head_rate", "pair_rate", "n_items"))
    (bl, (hl, hh)) = result["best_layer"], result["best_head"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["component", "layer", "head", "alpha", "resolved_fraction", "n_items"])
        for a, alpha in enumerate(alphas):
            for layer in range(lr.shape[0]):
                w.writerow(["cross_attn_out", layer, "", alpha, f"{lr[layer, a]:.4f}", n])
                for head in range(hr.shape[1]):
                    w.writerow(["cross_attn.z head", layer, head, alpha, f"{hr[layer, head, a]:.4f}", n])
            w.writerow([f"layer {bl} + head {hl}.{hh}", bl, hh, alpha, f"{pr[a]:.4f}", n])


def format_summary(s: dict) -> str:
    """One line; for the user's files, a line per file first (loop found / no loop found)."""
    files = ([f"loop found: {it['source']}\t{it['clean']}" for it in s.get("items", [])]
             + [f"no loop found: {r['audio']}\t{r['transcript']}" for r in s["no_loop"]] if "no_loop" in s else [])
    if not s["n_items"]:
        return "\n".join(files + [f"repetition [{s['model']}]: {s['message']}"])
    return "\n".join(files + [_summary_line(s)])


def _summary_line(s: dict) -> str:
    hl, hh = s["best_head"]
    return (f"repetition [{s['model']}]: {s['n_loops']} of {s['n_pool']} candidates loop, {s['n_items']} patched; "
            f"best layer {s['best_layer']} cross-attention resolves {100 * s['best_layer_resolved']:.1f}% "
            f"(alpha {s['best_layer_alpha']}), best head {hl}.{hh} {100 * s['best_head_resolved']:.1f}% "
            f"(alpha {s['best_head_alpha']}), both {100 * s['pair_resolved']:.1f}% (alpha {s['pair_alpha']}); "
            f"loop removed (rest not required intact): best layer {100 * np.max(s['layer_loop_removed']):.1f}%, "
            f"best head {100 * np.max(s['head_loop_removed']):.1f}%; "
            f"paper ({PAPER['model']}): {PAPER['layer']}, {PAPER['head']}, {PAPER['pair']}")
