"""Lenses on audio files: the work behind ``jaxasr-interp logit-lens`` and ``encoder-lens``.

Logit lens: :func:`teacher_ids` gives the tokens read (each file's greedy transcript, or a
given text), :func:`logit_lens_files` runs the lens over files in batches of one compiled width
and yields each file's :class:`.logit.LogitLens`, :func:`logit_lens_record` and
:func:`logit_lens_rows` turn one into a JSON record and table rows, and
:func:`saturation_summary` pools the saturation layers of every position.

Encoder lens (:func:`.encoder.encoder_lens` does the work): :func:`encoder_lens_record` and
:func:`encoder_lens_rows` are its JSON record and table rows, :func:`audio_mel` the mel
spectrogram shown above a one-file plot.

``dtype`` / ``precision`` are passed to the model's passes (:mod:`jaxasr_interp.core.dtypes`;
``dtype=None`` computes in the parameters' storage dtype).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxasr_interp.lenses.logit import logit_lens
from jaxasr_interp.whisper.api import transcribe_ids
from jaxasr_interp.whisper.audio import SAMPLE_RATE, load_audio, log_mel
from jaxasr_interp.whisper.tokenizer import teacher_tokens

ENCODER_LENS_FIELDS = ("wer", "cer", "max_repeat", "compression_ratio", "hit_limit")


def teacher_ids(model, paths, *, text: str | None = None, batch_size: int = 8, progress: bool = False,
                dtype=None, precision: str | None = "highest") -> list[list[int]]:
    """The token ids (prompt excluded) to teacher-force on each audio file: its greedy
    transcript (decoded in ``dtype`` at ``precision``), or, given ``text``, that text encoded
    (one file only)."""
    if text is not None:
        if len(paths) != 1:
            raise ValueError("a given text is read on exactly one audio file")
        return [model.tokenizer.encode(" " + text.strip())]
    return transcribe_ids(model, paths, batch_size=batch_size, progress=progress, dtype=dtype,
                          precision=precision)


def logit_lens_files(model, paths, ids, *, batch_size: int = 8, k: int = 5, progress: bool = False,
                     dtype=None, precision: str | None = "highest"):
    """Yield the logit lens of each audio file in ``paths``, in order, teacher-forced on the
    prompt and ``ids[i]`` (from :func:`teacher_ids`), computed in ``dtype`` at ``precision``.

    Files run ``batch_size`` at a time at one width (the longest prompt + ids), so every batch
    shares one compiled program; a short last batch is filled with copies of its last file.
    Each lens is unbatched and cut to the file's own positions (prompt + ids, see
    :meth:`.logit.LogitLens.utterance`)."""
    from tqdm import tqdm
    tok = model.tokenizer
    prompt = tok.prompt()
    seqs = [prompt + i for i in ids]
    width = max(map(len, seqs))
    size = min(batch_size, len(seqs))
    for start in tqdm(range(0, len(seqs), batch_size), desc="logit lens", unit="batch", disable=not progress):
        chunk = list(range(start, min(start + batch_size, len(seqs))))
        full = chunk + [chunk[-1]] * (size - len(chunk))
        mels = jnp.stack([log_mel(load_audio(paths[i]), n_mels=model.dims.n_mels) for i in full])
        tokens = jnp.asarray([teacher_tokens(prompt, ids[i], tok.eot, width) for i in full], jnp.int32)
        lens = logit_lens(model, mels, tokens, k=k, dtype=dtype, precision=precision)
        for j, i in enumerate(chunk):
            yield lens.utterance(j, len(seqs[i]))


def saturation_summary(saturations) -> tuple[np.ndarray, float]:
    """``(every position's saturation layer, their mean)`` from per-file saturation arrays
    (``LogitLens.saturation`` of each file's lens)."""
    values = np.concatenate(saturations)
    return values, float(np.mean(values))


def token_piece(tokenizer, i) -> str:
    """The text of one token id: decoded, else its vocabulary entry, else ``<id>``."""
    return tokenizer.decode([int(i)]) or tokenizer.tokenizer.id_to_token(int(i)) or f"<{int(i)}>"


def logit_lens_record(lens, tokenizer, audio) -> dict:
    """JSON-ready record of one file's (unbatched) logit lens: tokens, final predictions,
    saturation layers and, per site, the per-layer top tokens (as text), top-k ids and
    probabilities, final-token probability and rank, and KL, rounded to 6 decimals."""
    piece = lambda i: token_piece(tokenizer, i)
    sites = {}
    for site in lens.sites:
        f = lens.site(site)
        sites[site] = {"top_tokens": [[[piece(i) for i in cell] for cell in layer] for layer in f["top_ids"]],
                       **{k: np.round(v, 6).tolist() for k, v in f.items()}}
    return {"audio": str(audio), "tokens": lens.tokens.tolist(),
            "token_text": [piece(i) for i in lens.tokens],
            "final_ids": lens.final_ids.tolist(),
            "final_text": [piece(i) for i in lens.final_ids],
            "saturation": lens.saturation.tolist(), "sites": sites}


def logit_lens_rows(record: dict) -> list[dict]:
    """Table rows of a :func:`logit_lens_record`: one per site x layer x position."""
    rows = []
    for site, f in record["sites"].items():
        for layer, top in enumerate(f["top_tokens"]):
            for t, cell in enumerate(top):
                rows.append({"audio": record["audio"], "site": site, "layer": layer, "position": t,
                             "input": record["token_text"][t], "final": record["final_text"][t],
                             "top1": cell[0], "top1_prob": f["top_probs"][layer][t][0],
                             "final_prob": f["final_prob"][layer][t],
                             "final_rank": f["final_rank"][layer][t], "kl": f["kl"][layer][t],
                             "saturation": record["saturation"][t]})
    return rows


def encoder_lens_record(lens, audio) -> dict:
    """JSON-ready record of one file's :class:`.encoder.EncoderLens`: reference, final
    transcript, each layer's transcript and the per-layer :data:`ENCODER_LENS_FIELDS`."""
    return {"audio": str(audio), "reference": lens.reference, "final": lens.final, "ln_post": lens.ln_post,
            "transcripts": lens.transcripts, **{f: getattr(lens, f).tolist() for f in ENCODER_LENS_FIELDS}}


def encoder_lens_rows(records) -> list[dict]:
    """Table rows of :func:`encoder_lens_record` records: one per file x encoder layer."""
    return [{"audio": r["audio"], "layer": layer, **{f: r[f][layer] for f in ENCODER_LENS_FIELDS},
             "transcript": r["transcripts"][layer]} for r in records for layer in range(len(r["transcripts"]))]


def audio_mel(path, n_mels: int) -> tuple[np.ndarray, float]:
    """``(log-mel [n_mels, frames], duration in seconds)`` of one audio file, for plots."""
    audio = load_audio(path)
    return log_mel(audio, n_mels=n_mels), len(audio) / SAMPLE_RATE
