"""The encoder lens (PAPER.md method 2): what the decoder reads from each encoder layer.

For every encoder layer ``l``, ``ln_post(encoder resid_post[l])`` is given to the unchanged
decoder as if it were the encoder output, and a transcript is decoded greedily (plain argmax,
as :func:`.api.transcribe` does by default). :func:`encoder_lens_ids` is the pure core: one
encoder pass per utterance (all layers captured at once), then *one* batched greedy decode
over utterances x layers. ``ln_post=False`` feeds the raw residual instead, to show why the
final LayerNorm is needed.

Memory: each decoded row holds its own KV cache (large-v3: 0.64 GiB in float32, cross-attention
0.49 of it), so the rows are decoded ``row_chunk`` at a time per device
(:func:`~jaxasr_interp.core.sharding.map_chunks`: a ``lax.scan`` over chunks) and split over
all devices: one large-v3 utterance's 32 rows are 4 chunks of 8 on one chip, one chunk of 4
per device on 8. Chunking changes neither the ids nor anything else but memory (tested).

:func:`encoder_lens` scores each layer's transcript against a reference (or, when none is
given, against the full model's own transcript): WER and CER after text normalisation
(:mod:`.text_metrics`), and repetition (longest back-to-back n-gram run over the token ids,
zlib compression ratio, whether decoding ran into the token limit without end-of-text).
With ``ln_post=True`` the last layer *is* the model's encoder output, so its transcript is the
model's transcript (tested).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.core import layers as L
from jaxasr_interp.core.dtypes import as_precision, compute_dtype
from jaxasr_interp.whisper import text_metrics as tm
from jaxasr_interp.whisper.audio import load_audio, log_mel
from jaxasr_interp.whisper.decoding import greedy_decode, logit_bias
from jaxasr_interp.core.sharding import batch_mesh, map_chunks, padded_size, shard_leading
from jaxasr_interp.whisper.model import encode
from jaxasr_interp.whisper.streaming import check_files, loaded_batches
from jaxasr_interp.whisper.tokenizer import cut_at_eot
from jaxasr_interp.lenses.tuned import translate


@dataclasses.dataclass(frozen=True)
class EncoderLens:
    """Encoder lens of one utterance; per-layer arrays are ``[L]`` numpy, layer 0 first.

    transcripts: the decoded text of each encoder layer (list of L strings, layer 0 first).
    token_ids: the decoded ids of each layer (end-of-text excluded).
    final: the full model's transcript; reference: the text scored against (given, or final).
    wer, cer: word and character error rates after normalisation (inf: empty reference but
        words produced). word_errors/ref_words and char_errors/ref_chars: the counts behind
        them, for pooling over utterances (:func:`pooled_rates`).
    max_repeat: longest back-to-back run of one n-gram of token ids (1 = none).
    compression_ratio: zlib ratio of the text (Whisper treats > 2.4 as a loop).
    hit_limit: decoding reached max_new_tokens without end-of-text (a runaway loop).
    ln_post: whether ln_post was applied to the layer outputs.
    """

    transcripts: list
    token_ids: list
    final: str
    reference: str
    wer: np.ndarray
    cer: np.ndarray
    word_errors: np.ndarray
    ref_words: np.ndarray
    char_errors: np.ndarray
    ref_chars: np.ndarray
    max_repeat: np.ndarray
    compression_ratio: np.ndarray
    hit_limit: np.ndarray
    ln_post: bool = True


def lens_features(params, mel, translator=None, *, dims, ln_post: bool = True, dtype=jnp.float32,
                  precision="highest"):
    """What the decoder reads for each encoder layer: mel [n_mels, frames] -> [L (+1), S, D].

    Row ``l`` is ``ln_post`` of encoder layer ``l`` (translated first by an encoder
    ``translator`` from :mod:`.tuned_lens`: a tuned lens); without ``ln_post`` the raw residual.
    Then (see :func:`has_extra_row`) the last layer is not the model's encoder output, and an
    extra last row holds that output (it decodes the default reference). The encoder runs in
    ``dtype`` at ``precision``.
    """
    out, acts = encode(params, mel, dims=dims, capture=["encoder.resid_post"], dtype=dtype,
                       precision=precision)
    resid = acts["encoder.resid_post"]  # [L, S, D]
    if translator is not None:
        resid = translate(translator, resid)
    if ln_post:
        resid = L.layer_norm(resid, params["encoder"]["ln_post"])
    return jnp.concatenate([resid, out[None]]) if has_extra_row(ln_post, translator) else resid


def has_extra_row(ln_post: bool, translator) -> bool:
    return not ln_post or translator is not None


@functools.partial(jax.jit, static_argnames=("dims", "ln_post", "max_new_tokens", "row_chunk", "dtype",
                                             "precision"))
def encoder_lens_ids(params, mels, prompt, eot, bias, first_bias, translator=None, *, dims,
                     ln_post: bool = True, max_new_tokens: int, row_chunk: int | None = None,
                     dtype=jnp.float32, precision="highest"):
    """Pure core: mels [B, n_mels, frames] -> greedy ids [B, L (+1), max_new_tokens], the
    B x (L + 1) rows of :func:`lens_features` greedily decoded ``row_chunk`` at a time per
    device (None: all in one batched decode), split over all devices. ``dtype`` /
    ``precision``: of the encoder and the decoding (a concrete dtype here)."""
    numerics = dict(dtype=dtype, precision=precision)
    features = jax.vmap(lambda m: lens_features(params, m, translator, dims=dims, ln_post=ln_post,
                                                **numerics))(mels)
    n_utt, n_rows = features.shape[:2]
    rows = features.reshape((n_utt * n_rows,) + features.shape[2:])
    decode_rows = lambda f: greedy_decode(params, f, prompt, eot, bias, first_bias, dims=dims,
                                          max_new_tokens=max_new_tokens, **numerics)
    return map_chunks(decode_rows, rows, row_chunk).reshape(n_utt, n_rows, max_new_tokens)


def _inputs(audio_or_mels) -> tuple[list, bool]:
    """(the inputs as a list, whether a single item was given)."""
    if isinstance(audio_or_mels, (str, Path)) or (
            isinstance(audio_or_mels, (np.ndarray, jax.Array)) and np.ndim(audio_or_mels) < 3):
        return [audio_or_mels], True
    items = list(audio_or_mels)
    if not items:
        raise ValueError("no audio given")
    return items, False


def _check_input(x, want: tuple) -> None:
    if not (isinstance(x, (str, Path)) or np.ndim(x) == 1 or tuple(np.shape(x)) == want):
        raise ValueError(f"expected audio [samples] or a mel {want}, got an array of shape {np.shape(x)}")


def _load(x):
    """The host work of one checked input: a path or waveform loaded (``load_audio``), a mel
    as a float32 numpy array."""
    if isinstance(x, (str, Path)):
        return load_audio(x)
    x = np.asarray(x, np.float32)
    return load_audio(x) if x.ndim == 1 else x


def _mel(loaded, n_mels: int):
    return log_mel(loaded, n_mels=n_mels) if loaded.ndim == 1 else jnp.asarray(loaded)


def _checked_inputs(model, audio_or_mels) -> tuple[list, bool]:
    """:func:`_inputs`, every array's shape and every path's existence checked up front."""
    items, single = _inputs(audio_or_mels)
    for x in items:
        _check_input(x, (model.dims.n_mels, model.dims.n_samples_frames))
    check_files(items)
    return items, single


def as_mels(model, audio_or_mels) -> tuple[list, bool]:
    """(list of mels [n_mels, frames], whether a single item was given). All at once: for many
    inputs, stream them batch by batch instead (as :func:`encoder_lens` does)."""
    items, single = _checked_inputs(model, audio_or_mels)
    return [_mel(_load(x), model.dims.n_mels) for x in items], single


def _score(ids_rows, tokenizer, reference, ln_post, extra_row, normalizer) -> EncoderLens:
    eot = tokenizer.eot
    rows = [r.tolist() for r in ids_rows]
    ids = [cut_at_eot(r, eot) for r in rows]
    texts = [tokenizer.decode(r) for r in ids]
    final = texts[-1]
    if extra_row:  # the real encoder output, not a layer of the lens
        ids, texts, rows = ids[:-1], texts[:-1], rows[:-1]
    reference = final if reference is None else reference
    ref = tm.normalize(reference, normalizer)
    hyps = [tm.normalize(t, normalizer) for t in texts]
    we = np.array([tm.word_errors(ref, h) for h in hyps], np.int64).reshape(-1, 2)
    ce = np.array([tm.char_errors(ref, h) for h in hyps], np.int64).reshape(-1, 2)
    return EncoderLens(
        transcripts=texts, token_ids=ids, final=final, reference=reference,
        wer=np.array([tm.rate(e, n) for e, n in we]), cer=np.array([tm.rate(e, n) for e, n in ce]),
        word_errors=we[:, 0], ref_words=we[:, 1], char_errors=ce[:, 0], ref_chars=ce[:, 1],
        max_repeat=np.array([tm.max_repeat(r) for r in ids]),
        compression_ratio=np.array([tm.compression_ratio(t) for t in texts]),
        hit_limit=np.array([eot not in r for r in rows]), ln_post=ln_post)


def _lens_batch(model, loaded: list, size: int, args: tuple, static: dict) -> np.ndarray:
    """Greedy ids [B, L (+1), T] of one batch of loaded inputs; its mels live only in this call."""
    batch = [_mel(x, model.dims.n_mels) for x in loaded]
    padded = shard_leading(jnp.stack(batch + [batch[-1]] * (size - len(batch))))  # over all devices
    ids = encoder_lens_ids(model.params, padded, *args, dims=model.dims, **static)
    return np.asarray(ids)[: len(batch)]


def encoder_lens(model, audio_or_mels, references=None, *, ln_post: bool = True,
                 max_new_tokens: int | None = None, batch_size: int = 4, suppress: bool = False,
                 normalizer: str | None = "english", progress: bool = False, translator=None,
                 row_chunk: int | None = 8, dtype=None, precision="highest"):
    """Encoder lens of one input (-> :class:`EncoderLens`) or of a sequence (-> a list).

    ``audio_or_mels``: a path, a 16 kHz waveform, a mel [n_mels, frames], a [B, n_mels, frames]
    array, or a sequence of those. ``references``: a string (one input) or a list of strings;
    None scores each layer against the full model's transcript. ``batch_size`` utterances (each
    with all its layers) are decoded per compiled call. ``suppress=True`` applies Whisper's usual
    token suppression (as in :func:`.api.transcribe`): early layers then cannot answer with an
    immediate end-of-text and show what text they do carry. ``translator``: an encoder
    translator from :mod:`.tuned_lens` (a tuned encoder lens). ``row_chunk``: layer rows decoded
    at once per device (memory, see the module docstring; None: all rows of a batch at once).
    ``dtype``: ``"float32"`` / ``"bfloat16"`` (None: the parameters' own); ``precision``: the
    matmul precision (:mod:`jaxasr_interp.core.dtypes`).
    """
    items, single = _checked_inputs(model, audio_or_mels)
    if references is None or isinstance(references, str):
        references = [references] * len(items)
    if len(references) != len(items):
        raise ValueError(f"{len(references)} references for {len(items)} inputs")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    tok, dims = model.tokenizer, model.dims
    args = (jnp.asarray(tok.prompt(), jnp.int32), tok.eot,
            logit_bias(dims.n_vocab, tok.suppress_ids() if suppress else ()),
            logit_bias(dims.n_vocab, tok.blank_ids() if suppress else ()), translator)
    static = dict(ln_post=ln_post, max_new_tokens=max_new_tokens or dims.n_text_ctx // 2, row_chunk=row_chunk,
                  dtype=compute_dtype(dtype, model.params), precision=as_precision(precision))
    # The last batch is padded so that every call reuses one compiled program. The rows, not
    # the utterances, are split over the devices: fewer utterances than devices are not padded
    # (a padded utterance would be decoded in full, all its rows).
    size = min(batch_size, len(items))
    size = padded_size(size) if size >= batch_mesh().size else size
    results = []
    with contextlib.closing(loaded_batches(items, batch_size, _load)) as stream:
        if progress:
            from tqdm import tqdm
            stream = tqdm(stream, total=-(-len(items) // batch_size), desc="encoder lens", unit="batch")
        for loaded in stream:
            start, ids = len(results), _lens_batch(model, loaded, size, args, static)
            results += [_score(row, tok, references[start + i], ln_post,
                               has_extra_row(ln_post, translator), normalizer)
                        for i, row in enumerate(ids)]
    return results[0] if single else results


def pooled_rates(lenses) -> tuple[np.ndarray, np.ndarray]:
    """Corpus WER and CER per layer over utterances: summed errors / summed reference lengths."""
    lenses = [lenses] if isinstance(lenses, EncoderLens) else list(lenses)
    words = sum(x.ref_words for x in lenses)
    chars = sum(x.ref_chars for x in lenses)
    wer = np.array([tm.rate(e, n) for e, n in zip(sum(x.word_errors for x in lenses), words)])
    cer = np.array([tm.rate(e, n) for e, n in zip(sum(x.char_errors for x in lenses), chars)])
    return wer, cer
