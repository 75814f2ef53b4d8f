"""An HTML page of SAE latents: ``latent_page(model, store, sae, latent_ids, out_dir) -> Path``.

Contract, as :mod:`.page`: ``out_dir/index.html`` is self-contained and works offline (figures
inlined as base64 PNGs, audio as base64 16-bit WAV in ``<audio controls>``, inline CSS, no
script); the figures are written beside it (``latent_N_clip_C.png``) with the numbers in
``latents.json``. One section per latent:

1. its firing frequency over the store's rows and its largest activation;
2. its top-``k`` activating clips (:func:`..sae.inspect.top_activations`, one row per clip):
   the activation, the clip, the frame's time, and a playable snippet of ``snippet_seconds``
   around the frame (encoder sites; decoder sites: the clip's first ``snippet_seconds`` and
   the token predicted at that position);
3. for the top ``traces`` clips, the activation over the clip under its mel spectrogram
   (:func:`..plots.sae.plot_latent_trace`, the top frame marked);
4. decoder sites: the tokens whose logits the latent's decoder direction raises and lowers most
   (:func:`..sae.inspect.token_attribution`, a direct logit attribution).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from jaxasr_interp.report.page import _CSS, _img, _png, _section
from jaxasr_interp.whisper.audio import SAMPLE_RATE


def wav_base64(wave) -> str:
    """A 16 kHz waveform as a base64 16-bit PCM WAV file."""
    import soundfile as sf
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(wave, np.float32), -1, 1), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def audio_tag(wave) -> str:
    return f'<audio controls preload="none" src="data:audio/wav;base64,{wav_base64(wave)}"></audio>'


def _snippets(model, sae, top, paths, latent, seconds, n_traces, out, numerics):
    """Rows of the snippet table, the figures (base64) and the numbers of one latent."""
    from jaxasr_interp.plots.sae import plot_latent_trace
    from jaxasr_interp.sae.inspect import latent_trace, snippet
    from jaxasr_interp.whisper.audio import load_audio
    encoder = sae.config.site.startswith("encoder.")
    rows, figs, nums = [], [], []
    for rank, (value, clip, pos) in enumerate(top.of(latent)):
        item = dict(rank=rank + 1, activation=value, clip=clip, path=paths[clip], pos=pos)
        traced = rank < n_traces or not encoder  # decoder sites: the trace labels the token
        trace = latent_trace(model, sae, paths[clip], [latent], **numerics) if traced else None
        if encoder:
            wave, start = snippet(paths[clip], pos, seconds)
            item.update(time=(pos + 0.5) * 0.02, snippet_start=start)
            where = f"{item['time']:.2f} s"
        else:
            wave = load_audio(paths[clip])[: int(seconds * SAMPLE_RATE)]
            label = trace.labels[int(np.flatnonzero(trace.positions == pos)[0])] if pos in trace.positions else "?"
            item.update(token=label)
            where = f"position {pos}, predicts {html.escape(repr(label))}"
        if trace is not None and rank < n_traces:
            fig = plot_latent_trace(trace, name=f"latent {latent}", mark=item.get("time"),
                                    title=f"latent {latent} over {Path(paths[clip]).name}")
            figs.append(_img(_png(fig, out, f"latent_{latent}_clip_{clip}"), f"latent {latent} over clip {clip}"))
        rows.append(f"<tr><td>{rank + 1}</td><td>{value:.3f}</td><td>{html.escape(Path(paths[clip]).name)}</td>"
                    f"<td>{where}</td><td>{audio_tag(wave)}</td></tr>")
        nums.append(item)
    return rows, figs, nums


def _tokens_html(attr) -> str:
    cell = lambda pairs: ", ".join(f"<code>{html.escape(repr(t))}</code> {s:+.2f}" for t, s in pairs)
    return (f"<p>Direct logit attribution of the decoder direction (through ln_final's scale, tied "
            f"embedding):</p><p>raises: {cell(attr['raised'])}</p><p>lowers: {cell(attr['lowered'])}</p>")


def _latent_section(model, sae, top, paths, latent, *, seconds, n_traces, out, numerics):
    from jaxasr_interp.sae.inspect import token_attribution
    rows, figs, nums = _snippets(model, sae, top, paths, latent, seconds, n_traces, out, numerics)
    freq = float(top.fires[latent] / max(top.n_rows, 1))
    num = dict(latent=latent, frequency=freq, fires=int(top.fires[latent]), top=nums)
    body = (f"<p>fires on {100 * freq:.3f}% of {top.n_rows} stored rows; largest activation "
            f"{float(top.values[latent, 0]):.3f}</p>")
    if rows:
        body += ("<table><tr><th>rank</th><th>activation</th><th>clip</th><th>where</th><th>snippet</th></tr>"
                 + "".join(rows) + "</table>" + "".join(figs))
    else:
        body += "<p>(never fires on the stored rows)</p>"
    if sae.config.site.startswith("decoder."):
        num["tokens"] = token_attribution(model, sae, latent)
        body += _tokens_html(num["tokens"])
    note = (f"top {len(nums)} clips (one row per clip); snippets of {seconds:g} s around the frame"
            if sae.config.site.startswith("encoder.") else f"top {len(nums)} clips (one row per clip)")
    return _section(f"latent-{latent}", f"Latent {latent}", body, note), num


def latent_page(model, store, sae, latent_ids, out_dir, *, k: int = 8, snippet_seconds: float = 1.0,
                traces: int = 3, top=None, dtype=None, precision: str | None = "highest") -> Path:
    """Write the page of ``latent_ids`` of ``sae`` (a :class:`~..sae.train.TrainedSAE`) over the
    clips of ``store`` into ``out_dir``; return the path of ``index.html``. ``top``: a
    :func:`~..sae.inspect.top_activations` result to reuse (else computed, ``k`` per latent);
    ``dtype`` / ``precision``: the model's for the traces (None: its storage dtype)."""
    from jaxasr_interp.sae.inspect import top_activations
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = sae.config
    bad = [i for i in latent_ids if not 0 <= int(i) < cfg.d_sae]
    if bad:
        raise ValueError(f"latents {bad} out of range: this SAE has {cfg.d_sae} latents (0..{cfg.d_sae - 1})")
    top = top or top_activations(store, sae, k=k)
    paths = store.meta["items"]
    sections, nums = [], []
    for latent in latent_ids:
        section, num = _latent_section(model, sae, top, paths, int(latent), seconds=snippet_seconds,
                                       n_traces=traces, out=out,
                                       numerics=dict(dtype=dtype, precision=precision))
        sections.append(section)
        nums.append(num)
    meta = dict(model=model.source, site=cfg.site, layer=cfg.layer, d_sae=cfg.d_sae, kind=cfg.kind, k=cfg.k,
                store=str(store.directory), latents=nums)
    (out / "latents.json").write_text(json.dumps(meta, indent=1))
    title = f"SAE latents: {cfg.site} layer {cfg.layer}"
    head = (f"<h1>{html.escape(title)}</h1><p class=\"meta\">model {html.escape(model.source)}; {cfg.kind} SAE, "
            f"{cfg.d_sae} latents (k={cfg.k}); store {html.escape(str(store.directory))} "
            f"({len(paths)} clips); numbers in latents.json</p>")
    page = out / "index.html"
    page.write_text("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                    f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
                    + head + "".join(sections) + "</body></html>\n", encoding="utf-8")
    return page
