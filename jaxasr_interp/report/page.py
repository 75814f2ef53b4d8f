"""A one-page HTML report of one utterance: ``report(model, audio, out_dir) -> Path``.

Contract: ``out_dir/index.html`` is self-contained: every figure is inlined as a base64 PNG,
the CSS is inline, and the page has no script and no external resource, so it opens offline
and travels as one file. The same figures are written beside it (``mel.png``,
``logit_lens.png``, ``encoder_lens.png``, ``alignment.png``, ``head_patching.png``) with the
numbers behind them in ``report.json``. The directory is created if needed; existing files of
those names are replaced.

Sections (each a call into the library, nothing recomputed here by other means):

1. **Transcript**: greedy, plain argmax (:func:`.api.transcribe_ids`); with ``reference`` also
   its WER after Whisper's English normaliser.
2. **Mel spectrogram** of the 30 s window, trimmed to the audio.
3. **Logit lens** (:func:`.lens.logit_lens`) teacher-forced on the transcript: ``resid_post``
   heatmap and the mean saturation layer.
4. **Encoder lens** (:func:`.encoder_lens.encoder_lens`): a transcript and WER per encoder
   layer, scored against ``reference`` (or the model's own transcript).
5. **Cross-attention alignment**: ``decoder.cross_attn.pattern`` [L, H, T, S] of the
   teacher-forced pass over prompt + transcript + end-of-text, averaged over layers and heads.
   Row ``i`` is the query position that predicts transcript token ``i`` (position ``t``
   predicts token ``t + 1``, as in Whisper's own timing code); columns are encoder positions of
   20 ms; the mel is drawn above on the same time axis.
6. **Patching overview** (:func:`.patching.head_sweep`): every decoder (layer, head) of
   ``decoder.cross_attn.z`` patched towards a seeded white-noise run at ``alpha``; the cell is
   the mean change of the clean tokens' logits over the transcript positions (the end-of-text
   prediction included). Negative = the head carries audio evidence for the transcript.

Every section runs the model in ``dtype`` (None: the parameters' storage dtype) at matmul
``precision`` (:mod:`jaxasr_interp.core.dtypes`).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

PAGE_FIGURES = ("mel", "logit_lens", "encoder_lens", "alignment", "head_patching")


def _png(fig, out: Path, name: str) -> str:
    """Write ``fig`` to ``out/name.png``; return the PNG as base64 for inlining."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    data = buf.getvalue()
    (out / f"{name}.png").write_bytes(data)
    return base64.b64encode(data).decode("ascii")


def _token_labels(tok, ids) -> list[str]:
    return [tok.decode([i]) or tok.tokenizer.id_to_token(int(i)) or f"<{int(i)}>" for i in ids]


def cross_attention_alignment(params, audio_features, tokens, n_prompt: int, *, dims, dtype=jnp.float32,
                              precision: str | None = "highest"):
    """[rows, S]: mean cross-attention over layers and heads of the query positions that
    predict ``tokens[n_prompt:]`` (transcript + end-of-text)."""
    from jaxasr_interp.whisper.model import decode
    _, acts = decode(params, jnp.asarray(tokens, jnp.int32), audio_features, dims=dims,
                     capture=["decoder.cross_attn.pattern"], dtype=dtype, precision=precision)
    pattern = np.asarray(acts["decoder.cross_attn.pattern"])  # [L, H, T, S]
    return pattern[:, :, n_prompt - 1: len(tokens) - 1].mean(axis=(0, 1))


def head_patching(model, audio_features, tokens, n_prompt: int, *, alpha: float = 1.0,
                  seed: int = 0, dtype=jnp.float32, precision: str | None = "highest"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(mean clean-token logit change [L, H], unpatched clean-token logits of the transcript
    positions) when each (layer, head) of ``decoder.cross_attn.z`` is patched towards noise."""
    from jaxasr_interp.patching.sweeps import head_sweep
    from jaxasr_interp.patching.reference import reference_activations
    site = "decoder.cross_attn.z"
    toks = jnp.asarray(tokens, jnp.int32)
    ref = reference_activations(model, toks, [site], seed=seed, dtype=dtype, precision=precision)[site]
    patched, clean = head_sweep(model.params, toks, audio_features, ref, jnp.asarray([alpha], jnp.float32),
                                dims=model.dims, site=site, dtype=dtype, precision=precision)
    # metric index i scores tokens[i + 1]: the transcript's predictions start at n_prompt - 1
    patched, clean = np.asarray(patched)[:, :, 0, n_prompt - 1:], np.asarray(clean)[n_prompt - 1:]
    return (patched - clean).mean(axis=-1), clean


def _analyse(model, wave, reference, bar, *, alpha, seed, max_new_tokens, numerics):
    """Run every section (``bar.update()`` after each); return (numbers, figures by name)."""
    from jaxasr_interp.plots import lens as plots, report as plots_report
    from jaxasr_interp.whisper.api import transcribe_ids
    from jaxasr_interp.whisper.audio import SAMPLE_RATE, log_mel
    from jaxasr_interp.lenses.encoder import encoder_lens
    from jaxasr_interp.lenses.logit import logit_lens
    from jaxasr_interp.whisper.model import encode
    from jaxasr_interp.whisper.text_metrics import normalize, rate, word_errors
    from jaxasr_interp.whisper.tokenizer import teacher_tokens

    tok, dims = model.tokenizer, model.dims
    seconds = len(wave) / SAMPLE_RATE
    mel = log_mel(wave, n_mels=dims.n_mels)
    ids = transcribe_ids(model, wave, batch_size=1, max_new_tokens=max_new_tokens, **numerics)[0]
    text = tok.decode(ids).strip()
    prompt = tok.prompt()
    num = {"transcript": text, "token_ids": ids, "seconds": seconds, "reference": reference}
    if reference is not None:
        num["wer"] = rate(*word_errors(normalize(reference), normalize(text)))
    figs = {"mel": plots_report.plot_mel(mel, seconds)}
    bar.update()
    lens = logit_lens(model, mel, prompt + ids, **numerics)
    num["saturation"] = lens.saturation.tolist()
    figs["logit_lens"] = plots.plot_logit_lens(lens, tok, max_positions=len(prompt) + len(ids))
    bar.update()
    el = encoder_lens(model, wave, reference, max_new_tokens=max_new_tokens, **numerics)
    num["encoder_lens"] = {"transcripts": el.transcripts, "wer": el.wer.tolist(),
                           "cer": el.cer.tolist(), "scored_against": el.reference}
    figs["encoder_lens"] = plots.plot_encoder_lens(el, mel=mel, seconds=seconds)
    bar.update()
    features, _ = encode(model.params, mel, dims=dims, **numerics)
    tokens = teacher_tokens(prompt, ids, tok.eot)
    align = cross_attention_alignment(model.params, features, tokens, len(prompt), dims=dims, **numerics)
    labels = _token_labels(tok, tokens[len(prompt):])
    n_pos = int(np.ceil(seconds / plots_report.AUDIO_POSITION_SECONDS))
    num["alignment_peak_seconds"] = ((align[:, :n_pos].argmax(1) + 0.5)
                                     * plots_report.AUDIO_POSITION_SECONDS).tolist()
    figs["alignment"] = plots_report.plot_alignment(align, mel, seconds, labels)
    bar.update()
    delta, clean = head_patching(model, features, tokens, len(prompt), alpha=alpha, seed=seed, **numerics)
    num["head_patching"] = {"site": "decoder.cross_attn.z", "alpha": alpha, "seed": seed,
                            "mean_logit_change": delta.tolist(), "clean_logits": clean.tolist()}
    figs["head_patching"] = plots_report.plot_head_patching(
        delta, title=f"patching each cross_attn.z head towards white noise (alpha={alpha:g})")
    bar.update()
    return num, figs


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1a1a1a;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.8em}.meta{color:#555;font-size:.9em}.transcript{font-size:1.2em;background:#f4f6f8;
padding:.6em .8em;border-left:4px solid #2b6cb0}img{max-width:100%;height:auto;display:block}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:.25em .5em;
text-align:left;vertical-align:top}code{background:#f4f4f4;padding:0 .2em}
"""


def _section(sid: str, title: str, body: str, note: str = "") -> str:
    note = f'<p class="meta">{note}</p>' if note else ""
    return f'<section id="{sid}"><h2>{html.escape(title)}</h2>{note}{body}</section>'


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _encoder_table(el: dict) -> str:
    rows = "".join(f"<tr><td>{i}</td><td>{w:.3f}</td><td>{c:.3f}</td><td>{html.escape(t.strip()) or '(empty)'}</td></tr>"
                   for i, (w, c, t) in enumerate(zip(el["wer"], el["cer"], el["transcripts"])))
    return f"<table><tr><th>layer</th><th>WER</th><th>CER</th><th>transcript</th></tr>{rows}</table>"


def _top_heads(delta, k: int = 3) -> str:
    delta = np.asarray(delta)
    order = np.argsort(delta, axis=None)[:k]  # most negative: the heads the transcript needs most
    items = "".join(f"<li>layer {l}, head {h}: {delta[l, h]:+.3f}</li>"
                    for l, h in zip(*np.unravel_index(order, delta.shape)))
    return f"<p>Heads whose patching lowers the clean tokens' logits most:</p><ol>{items}</ol>"


def render_html(num: dict, images: dict, *, name: str, model_desc: str) -> str:
    """The page: ``num`` as in report.json, ``images`` {figure name: base64 PNG}."""
    esc = html.escape
    transcript = f'<p class="transcript">{esc(num["transcript"]) or "(empty transcript)"}</p>'
    if num.get("reference") is not None:
        transcript += f'<p>Reference: {esc(num["reference"])}<br>WER: {num["wer"]:.3f}</p>'
    sat = np.asarray(num["saturation"], np.float32)
    hp = num["head_patching"]
    parts = [
        _section("transcript", "Transcript", transcript, "greedy decoding, plain argmax over the vocabulary"),
        _section("mel", "Mel spectrogram", _img(images["mel"], "log-mel spectrogram")),
        _section("logit-lens", "Logit lens", _img(images["logit_lens"], "logit lens heatmap"),
                 f"each decoder layer's resid_post read through ln_final and the tied embedding; "
                 f"mean saturation layer {sat.mean():.2f} (0-based)"),
        _section("encoder-lens", "Encoder lens", _img(images["encoder_lens"], "encoder lens")
                 + _encoder_table(num["encoder_lens"]),
                 "ln_post(encoder layer l) fed to the unchanged decoder; WER against "
                 + ("the reference" if num.get("reference") is not None else "the model's own transcript")),
        _section("alignment", "Cross-attention alignment", _img(images["alignment"], "cross-attention alignment"),
                 "decoder.cross_attn.pattern averaged over layers and heads; one row per predicted "
                 "token, each row scaled to its peak; 20 ms per encoder position"),
        _section("patching", "Patching overview", _img(images["head_patching"], "head patching heatmap")
                 + _top_heads(hp["mean_logit_change"]),
                 f"each {hp['site']} head patched towards a white-noise run (seed {hp['seed']}, "
                 f"alpha {hp['alpha']:g}); cell = mean change of the clean tokens' logits"),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>jaxasr-interp report: {esc(name)}</title><style>{_CSS}</style></head><body>"
            f"<h1>jaxasr-interp report: {esc(name)}</h1><p class=\"meta\">model {esc(model_desc)}; "
            f"{num['seconds']:.2f} s of audio; files beside this page: report.json and "
            f"{', '.join(f + '.png' for f in PAGE_FIGURES)}</p>" + "".join(parts) + "</body></html>\n")


def report(model, audio, out_dir, *, reference: str | None = None, name: str | None = None,
           alpha: float = 1.0, seed: int = 0, max_new_tokens: int | None = None,
           progress: bool = True, dtype=None, precision: str | None = "highest") -> Path:
    """Write the report of ``audio`` (a path or a 16 kHz waveform) into ``out_dir``; return the
    path of ``index.html``. ``reference``: the text spoken (for WERs); ``alpha`` and ``seed``:
    the strength of the head patches and the white-noise reference's seed; ``dtype`` /
    ``precision``: the model's (module docstring)."""
    from tqdm import tqdm
    from jaxasr_interp.core.dtypes import as_precision, compute_dtype
    numerics = dict(dtype=compute_dtype(dtype, model.params), precision=as_precision(precision))
    from jaxasr_interp.whisper.audio import load_audio
    wave = load_audio(audio)
    name = name or (Path(audio).name if isinstance(audio, (str, Path)) else "waveform")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tqdm(total=6, desc="report", unit="section", disable=not progress) as bar:
        num, figs = _analyse(model, wave, reference, bar, alpha=alpha, seed=seed,
                             max_new_tokens=max_new_tokens, numerics=numerics)
        images = {key: _png(fig, out, key) for key, fig in figs.items()}
        bar.update()
    desc = f"{model.source or 'in memory'} ({model.dims.n_audio_layer} encoder / {model.dims.n_text_layer} decoder layers)"
    num = {"audio": name, "model": model.source, **num}
    (out / "report.json").write_text(json.dumps(num, indent=1))
    page = out / "index.html"
    page.write_text(render_html(num, images, name=name, model_desc=desc), encoding="utf-8")
    return page
