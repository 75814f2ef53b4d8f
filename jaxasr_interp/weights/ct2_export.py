"""Our parameters -> CTranslate2 Whisper variables: the inverse of :mod:`.ct2`'s mapping, as the
CTranslate2 Whisper converter writes them (fused ``[q; k; v]`` self-attention and ``[k; v]``
cross-attention with zero key biases, torch layouts, the scalars of ``WhisperSpec``). For tests
and :func:`.ct2_file.write_ct2`; re-exported by :mod:`.ct2`.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.weights.layout import iter_paths


def _scalars(dims: Dims) -> dict[str, np.ndarray]:
    from jaxasr_interp.weights.ct2 import GELU  # imported here: ct2 re-exports this module
    return {
        "decoder/activation": np.int8(GELU), "decoder/alibi": np.int8(0),
        "decoder/alignment_heads": np.int16(1), "decoder/alignment_layer": np.int16(-1),
        "decoder/num_heads": np.int16(dims.n_text_head), "decoder/pre_norm": np.int8(1),
        "decoder/scale_embeddings": np.int8(0), "decoder/start_from_zero_embedding": np.int8(0),
        "encoder/num_heads": np.int16(dims.n_audio_head),
    }


def _whole_model(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {
        "decoder/embeddings/weight": flat["decoder/token_embedding/embedding"],
        "decoder/position_encodings/encodings": flat["decoder/positional_embedding/embedding"],
        "encoder/position_encodings/encodings": flat["encoder/positional_embedding/embedding"],
    }
    for stack, ln in (("encoder", "ln_post"), ("decoder", "ln")):
        out[f"{stack}/layer_norm/gamma"] = flat[f"{stack}/{ln}/scale"]
        out[f"{stack}/layer_norm/beta"] = flat[f"{stack}/{ln}/bias"]
    for conv in ("conv1", "conv2"):
        out[f"encoder/{conv}/weight"] = flat[f"encoder/{conv}/kernel"].transpose(2, 1, 0)
        out[f"encoder/{conv}/bias"] = flat[f"encoder/{conv}/bias"]
    return out


def _block(flat: Mapping[str, np.ndarray], stack: str, i: int) -> dict[str, np.ndarray]:
    """One layer's variables: layer norms, fused self-attention, FFN (and cross-attention)."""
    def blk(name):
        return flat[f"{stack}/blocks/{name}"][i]

    pre, out = f"{stack}/layer_{i}", {}
    pairs = [("self_attention", "attn_ln"), ("ffn", "mlp_ln")]
    if stack == "decoder":
        pairs.append(("attention", "cross_attn_ln"))
    for ct, ours in pairs:
        out[f"{pre}/{ct}/layer_norm/gamma"] = blk(f"{ours}/scale")
        out[f"{pre}/{ct}/layer_norm/beta"] = blk(f"{ours}/bias")
    zeros = np.zeros_like(blk("attn/query/bias"))
    out[f"{pre}/self_attention/linear_0/weight"] = np.concatenate(
        [blk(f"attn/{p}/kernel").T for p in ("query", "key", "value")])
    out[f"{pre}/self_attention/linear_0/bias"] = np.concatenate([blk("attn/query/bias"), zeros, blk("attn/value/bias")])
    out[f"{pre}/self_attention/linear_1/weight"] = blk("attn/out/kernel").T
    out[f"{pre}/self_attention/linear_1/bias"] = blk("attn/out/bias")
    for j, mlp in enumerate(("mlp1", "mlp2")):
        out[f"{pre}/ffn/linear_{j}/weight"] = blk(f"{mlp}/kernel").T
        out[f"{pre}/ffn/linear_{j}/bias"] = blk(f"{mlp}/bias")
    if stack == "decoder":
        out[f"{pre}/attention/linear_0/weight"] = blk("cross_attn/query/kernel").T
        out[f"{pre}/attention/linear_0/bias"] = blk("cross_attn/query/bias")
        out[f"{pre}/attention/linear_1/weight"] = np.concatenate(
            [blk("cross_attn/key/kernel").T, blk("cross_attn/value/kernel").T])
        out[f"{pre}/attention/linear_1/bias"] = np.concatenate([zeros, blk("cross_attn/value/bias")])
        out[f"{pre}/attention/linear_2/weight"] = blk("cross_attn/out/kernel").T
        out[f"{pre}/attention/linear_2/bias"] = blk("cross_attn/out/bias")
    return out


def ct2_variables_from_params(params: Mapping, dims: Dims) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Float32 CTranslate2 variables (scalars as int8/int16) and aliases, as the CTranslate2
    Whisper converter writes them. For tests and :func:`write_ct2`."""
    flat = {k: np.asarray(v, np.float32) for k, v in iter_paths(params)}
    out: dict[str, np.ndarray] = {**_scalars(dims), **_whole_model(flat)}
    for stack, n in (("encoder", dims.n_audio_layer), ("decoder", dims.n_text_layer)):
        for i in range(n):
            out.update(_block(flat, stack, i))
    out = {k: np.asarray(v, order="C") for k, v in out.items()}
    return out, {"decoder/projection/weight": "decoder/embeddings/weight"}
