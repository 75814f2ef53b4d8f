"""CTranslate2 Whisper checkpoints: the mapping of ``model.bin`` variables onto our parameters.

The binary format itself is read and written by :mod:`.ct2_file`; the inverse mapping (our
parameters -> variables) is :mod:`.ct2_export`.

Whisper variable names (``WhisperSpec`` revision 3, read from the bundled files)::

    encoder/conv{1,2}/{weight [out, in, 3], bias}
    encoder/position_encodings/encodings [n_audio_ctx, d]      (openai's sinusoids)
    encoder/layer_N/self_attention/layer_norm/{gamma, beta}
    encoder/layer_N/self_attention/linear_0/{weight [3d, d], bias [3d]}   fused rows [q; k; v]
    encoder/layer_N/self_attention/linear_1/{weight, bias}                out
    encoder/layer_N/ffn/layer_norm/{gamma, beta}, ffn/linear_0 (fc1), ffn/linear_1 (fc2)
    encoder/layer_norm/{gamma, beta}, encoder/num_heads (int16 scalar)
    decoder/embeddings/weight [n_vocab, d]
    decoder/position_encodings/encodings [n_text_ctx, d]       (learned)
    decoder/layer_N/self_attention/...     as in the encoder
    decoder/layer_N/attention/layer_norm   cross-attention; linear_0 = q, linear_1 = [k; v],
                                           linear_2 = out
    decoder/layer_N/ffn/...
    decoder/layer_norm/{gamma, beta}
    decoder/{num_heads, activation, pre_norm, scale_embeddings, alibi, alignment_layer,
             alignment_heads, start_from_zero_embedding}   scalars
    alias decoder/projection/weight -> decoder/embeddings/weight

Whisper's key projections have no bias; CTranslate2 fuses them with zeros, which are checked
to be exactly zero and consumed. Linear weights are ``[out, in]`` and convs
``[out, in, width]``, transposed here into the Flax layout of :mod:`.layout`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from jaxasr_interp.whisper.config import WHISPER_HEAD_DIM, Dims
from jaxasr_interp.weights.layout import CheckpointError, ParamFiller, TensorSource

from jaxasr_interp.weights.ct2_file import Ct2File, decoded_variables, read_ct2, write_ct2  # noqa: F401  (re-exported)
from jaxasr_interp.weights.ct2_export import ct2_variables_from_params  # noqa: F401  (re-exported)

# Every released Whisper model has 1500 encoder positions. Only used when a file carries no
# encoder position encodings (CTranslate2's WhisperSpec always writes them) so that their
# number cannot be read from the weights.
WHISPER_N_AUDIO_CTX = 1500


def sinusoids(length: int, channels: int, max_timescale: float = 10000) -> np.ndarray:
    """openai/whisper's ``sinusoids``: the encoder's fixed position embedding, in float32."""
    if channels % 2:
        raise ValueError(f"sinusoids need an even number of channels, got {channels}")
    log_timescale_increment = np.float32(np.log(max_timescale) / (channels // 2 - 1))
    inv_timescales = np.exp(-log_timescale_increment * np.arange(channels // 2, dtype=np.float32))
    scaled_time = np.arange(length, dtype=np.float32)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled_time), np.cos(scaled_time)], axis=1).astype(np.float32)


# ----------------------------------------------------------------------------------- mapping

# Scalars of WhisperSpec / TransformerDecoderSpec. Each one is read, and either used (heads)
# or checked against the value that Whisper's architecture needs: a file whose flags describe
# another architecture is refused rather than silently run as Whisper.
GELU = 3  # common_spec.Activation.GELU
_REQUIRED_FLAGS = {
    "decoder/activation": GELU,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/alibi": 0,
    "decoder/start_from_zero_embedding": 0,
}
# Flags that only matter when alibi is on, and the default alignment-head selection (the
# alignment heads of Whisper are in config.json): read and skipped by name.
_IGNORED_SCALARS = ("decoder/alibi_use_positive_positions", "decoder/scale_alibi",
                    "decoder/alignment_layer", "decoder/alignment_heads")
# A per-linear compute hint written by newer CTranslate2 versions.
_IGNORED_SCALAR_SUFFIXES = ("/keep_in_float32",)

_LAYER_RE = re.compile(r"^(encoder|decoder)/layer_(\d+)/")


def _scalar(tensors: TensorSource, name: str) -> int | None:
    if name not in tensors:
        return None
    value = tensors.take(name)
    if value.ndim != 0:
        raise CheckpointError(f"{tensors.source}: {name!r} should be a scalar, got shape {value.shape}")
    return int(value)


def _split_rows(tensors: TensorSource, name: str, d: int, parts: int) -> list[np.ndarray]:
    value = tensors.take(name)
    want = (parts * d,) + ((d,) if name.endswith("weight") else ())
    if value.shape != want:
        raise CheckpointError(f"{tensors.source}: tensor {name!r} has shape {value.shape}, expected {want} "
                              f"({parts} fused projections of width {d})")
    return [value[i * d:(i + 1) * d] for i in range(parts)]


def _check_zero(tensors: TensorSource, name: str, key_bias: np.ndarray) -> None:
    if np.any(key_bias != 0):
        raise CheckpointError(f"{tensors.source}: tensor {name!r} has a nonzero key bias "
                              f"(max |b| = {float(np.max(np.abs(key_bias))):.3g}); Whisper's key "
                              "projection has no bias, so this is not a Whisper checkpoint")


def _count_layers(names: Iterable[str], stack: str) -> int:
    idx = [int(m.group(2)) for n in names if (m := _LAYER_RE.match(n)) and m.group(1) == stack]
    return max(idx) + 1 if idx else 0


def _check_scalars(tensors: TensorSource) -> None:
    """Read every architecture flag: refuse a wrong one, skip the ignored ones by name."""
    for name, want in _REQUIRED_FLAGS.items():
        got = _scalar(tensors, name)
        if got is not None and got != want:
            raise CheckpointError(f"{tensors.source}: {name!r} is {got}, but Whisper needs {want}")
    for name in _IGNORED_SCALARS:
        _scalar(tensors, name)
    for name, value in tensors.tensors.items():
        if name.endswith(_IGNORED_SCALAR_SUFFIXES) and np.ndim(value) == 0:
            tensors.skip(name)


def _shape_of(variables: Mapping[str, np.ndarray], name: str, source: str) -> tuple[int, ...]:
    if name not in variables:
        raise CheckpointError(f"{source}: missing tensor {name!r}")
    return np.shape(variables[name])


def _ffn_width(variables: Mapping[str, np.ndarray], stack: str) -> int:
    """Rows of the first block's ``ffn/linear_0/weight`` [ffn, d]; 0 (Whisper's default) when
    absent, so that the mapping names the missing tensor."""
    weight = variables.get(f"{stack}/layer_0/ffn/linear_0/weight")
    return int(np.shape(weight)[0]) if weight is not None and np.ndim(weight) == 2 else 0


def _ct2_dims(variables: Mapping[str, np.ndarray], tensors: TensorSource, config: Mapping) -> Dims:
    """Dims from the tensor shapes; heads from the ``*/num_heads`` scalars, else ``config``,
    else Whisper's 64-dimensional heads."""
    source = tensors.source
    conv1 = _shape_of(variables, "encoder/conv1/weight", source)
    emb = _shape_of(variables, "decoder/embeddings/weight", source)
    dec_pos = _shape_of(variables, "decoder/position_encodings/encodings", source)
    if len(conv1) != 3 or len(emb) != 2 or len(dec_pos) != 2:
        raise CheckpointError(f"{source}: encoder/conv1/weight {conv1}, decoder/embeddings/weight {emb} or "
                              f"decoder/position_encodings/encodings {dec_pos} has the wrong rank")
    da, dt = conv1[0], emb[1]
    enc_pos = "encoder/position_encodings/encodings"
    n_audio_ctx = _shape_of(variables, enc_pos, source)[0] if enc_pos in variables else WHISPER_N_AUDIO_CTX
    heads = {}
    for stack, d, cfg_key in (("encoder", da, "encoder_attention_heads"), ("decoder", dt, "decoder_attention_heads")):
        n = _scalar(tensors, f"{stack}/num_heads")
        heads[stack] = n or config.get(cfg_key) or max(d // WHISPER_HEAD_DIM, 1)
    names = list(variables)
    try:
        return Dims(n_mels=conv1[1], n_audio_ctx=n_audio_ctx, n_audio_state=da, n_audio_head=heads["encoder"],
                    n_audio_layer=_count_layers(names, "encoder"), n_vocab=emb[0], n_text_ctx=dec_pos[0],
                    n_text_state=dt, n_text_head=heads["decoder"], n_text_layer=_count_layers(names, "decoder"),
                    n_audio_ffn=_ffn_width(variables, "encoder"), n_text_ffn=_ffn_width(variables, "decoder"))
    except ValueError as e:
        raise CheckpointError(f"{source}: inconsistent model dimensions: {e}") from None


class _Mapper:
    """Moves CTranslate2 variables into a :class:`ParamFiller`, transposing and splitting."""

    def __init__(self, tensors: TensorSource, dims: Dims):
        self.tensors, self.dims = tensors, dims
        self.filler = ParamFiller(dims, tensors.source)

    def put(self, path, name, kind="id", layer=None):
        value, origin = self.tensors.take(name), name
        if (kind == "linear" and value.ndim == 2) or (kind == "conv" and value.ndim == 3):
            origin = f"{name} (stored as {value.shape}, transposed)"
            value = value.T if kind == "linear" else value.transpose(2, 1, 0)
        self.filler.put(path, value, layer=layer, origin=origin)

    def put_value(self, path, value, name, layer=None, kind="id"):
        self.filler.put(path, value.T if kind == "linear" else value, layer=layer, origin=name)

    def norm(self, path, prefix, layer=None):
        self.put(f"{path}/scale", f"{prefix}/gamma", layer=layer)
        self.put(f"{path}/bias", f"{prefix}/beta", layer=layer)

    def linear(self, path, prefix, layer=None):
        self.put(f"{path}/kernel", f"{prefix}/weight", "linear", layer)
        self.put(f"{path}/bias", f"{prefix}/bias", layer=layer)

    def self_attention(self, stack, i, d):
        ct, ours = f"{stack}/layer_{i}/self_attention", f"{stack}/blocks/attn"
        self.norm(f"{stack}/blocks/attn_ln", f"{ct}/layer_norm", i)
        wq, wk, wv = _split_rows(self.tensors, f"{ct}/linear_0/weight", d, 3)
        bq, bk, bv = _split_rows(self.tensors, f"{ct}/linear_0/bias", d, 3)
        _check_zero(self.tensors, f"{ct}/linear_0/bias", bk)
        for proj, w, b in (("query", wq, bq), ("key", wk, None), ("value", wv, bv)):
            self.put_value(f"{ours}/{proj}/kernel", w, f"{ct}/linear_0/weight", i, "linear")
            if b is not None:
                self.put_value(f"{ours}/{proj}/bias", b, f"{ct}/linear_0/bias", i)
        self.linear(f"{ours}/out", f"{ct}/linear_1", i)

    def cross_attention(self, i, d):
        ct, ours = f"decoder/layer_{i}/attention", "decoder/blocks/cross_attn"
        self.norm("decoder/blocks/cross_attn_ln", f"{ct}/layer_norm", i)
        self.linear(f"{ours}/query", f"{ct}/linear_0", i)
        wk, wv = _split_rows(self.tensors, f"{ct}/linear_1/weight", d, 2)
        bk, bv = _split_rows(self.tensors, f"{ct}/linear_1/bias", d, 2)
        _check_zero(self.tensors, f"{ct}/linear_1/bias", bk)
        self.put_value(f"{ours}/key/kernel", wk, f"{ct}/linear_1/weight", i, "linear")
        self.put_value(f"{ours}/value/kernel", wv, f"{ct}/linear_1/weight", i, "linear")
        self.put_value(f"{ours}/value/bias", bv, f"{ct}/linear_1/bias", i)
        self.linear(f"{ours}/out", f"{ct}/linear_2", i)

    def ffn(self, stack, i):
        ct = f"{stack}/layer_{i}/ffn"
        self.norm(f"{stack}/blocks/mlp_ln", f"{ct}/layer_norm", i)
        self.linear(f"{stack}/blocks/mlp1", f"{ct}/linear_0", i)
        self.linear(f"{stack}/blocks/mlp2", f"{ct}/linear_1", i)

    def encoder(self):
        dims = self.dims
        for conv in ("conv1", "conv2"):
            self.put(f"encoder/{conv}/kernel", f"encoder/{conv}/weight", "conv")
            self.put(f"encoder/{conv}/bias", f"encoder/{conv}/bias")
        if "encoder/position_encodings/encodings" in self.tensors:
            self.put("encoder/positional_embedding/embedding", "encoder/position_encodings/encodings")
        else:
            # CTranslate2 files carry the encoder's sinusoidal encodings; should one not, they are
            # the fixed function openai/whisper computes, not learned weights, so recompute them.
            self.filler.put("encoder/positional_embedding/embedding",
                            sinusoids(dims.n_audio_ctx, dims.n_audio_state), origin="sinusoids()")
        self.norm("encoder/ln_post", "encoder/layer_norm")
        for i in range(dims.n_audio_layer):
            self.self_attention("encoder", i, dims.n_audio_state)
            self.ffn("encoder", i)

    def decoder(self):
        self.put("decoder/token_embedding/embedding", "decoder/embeddings/weight")
        self.put("decoder/positional_embedding/embedding", "decoder/position_encodings/encodings")
        self.norm("decoder/ln", "decoder/layer_norm")
        for i in range(self.dims.n_text_layer):
            self.self_attention("decoder", i, self.dims.n_text_state)
            self.cross_attention(i, self.dims.n_text_state)
            self.ffn("decoder", i)


def _check_projection(tensors: TensorSource) -> None:
    """The output projection is tied to the token embedding: an alias in CTranslate2 files, or
    a copy; a different tensor (or a nonzero bias) is refused."""
    if "decoder/projection/weight" in tensors:
        proj = tensors.take("decoder/projection/weight")
        if not np.array_equal(proj, tensors.tensors["decoder/embeddings/weight"]):
            raise CheckpointError(f"{tensors.source}: decoder/projection/weight differs from the token embedding; "
                                  "Whisper ties them and so does this library")
    if "decoder/projection/bias" in tensors:
        _check_zero(tensors, "decoder/projection/bias", tensors.take("decoder/projection/bias"))


def params_from_ct2_variables(variables: Mapping[str, np.ndarray], source: str = "CTranslate2 model",
                              config: Mapping | None = None) -> tuple[dict, Dims]:
    """Map decoded CTranslate2 variables (see :func:`decoded_variables`) to ``(params, dims)``.

    Dims come from the tensor shapes (the MLP widths from the first block's ``ffn/linear_0``);
    head counts from the ``*/num_heads`` scalars, else from ``config``
    (``encoder_attention_heads``/``decoder_attention_heads``), else Whisper's 64-dimensional heads.
    """
    tensors = TensorSource(variables, source)
    _check_scalars(tensors)
    mapper = _Mapper(tensors, _ct2_dims(variables, tensors, config or {}))
    mapper.encoder()
    mapper.decoder()
    _check_projection(tensors)
    tensors.check_all_taken()
    return mapper.filler.finish(), mapper.dims


def read_ct2_config(directory: str | os.PathLike) -> dict:
    """The ``config.json`` beside a ``model.bin`` (alignment heads, suppress ids ...), or {}."""
    import json
    cfg = Path(directory) / "config.json"
    if not cfg.is_file():
        return {}
    try:
        return json.loads(cfg.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{cfg}: unreadable CTranslate2 config.json ({e})") from None


def load_ct2(path_or_parts: str | os.PathLike | Sequence[str | os.PathLike],
             config: Mapping | None = None) -> tuple[dict, Dims]:
    """Read a CTranslate2 Whisper ``model.bin`` (or its parts, in order) into ``(params, dims)``."""
    ct2 = read_ct2(path_or_parts)
    if ct2.spec_name and ct2.spec_name != "WhisperSpec":
        raise CheckpointError(f"{ct2.source}: a CTranslate2 {ct2.spec_name}, not a WhisperSpec model")
    return params_from_ct2_variables(decoded_variables(ct2), ct2.source, config)
