"""transformers' Flax Whisper format: ``config.json`` + ``flax_model.msgpack`` (the hub's Whisper
repositories and whisper-jax), read and written.

The msgpack holds ``flax.serialization.to_bytes(params)``: nested maps of string keys (layer
indices ``"0"``, ``"1"`` ...) whose leaves are arrays, read with
``flax.serialization.msgpack_restore`` (data only: no pickle, nothing that can run code)::

    model/encoder/conv{1,2}/{kernel [3, in, out], bias}
    model/encoder/embed_positions/embedding [n_audio_ctx, d]     (stored, not recomputed)
    model/encoder/layers/N/{self_attn_layer_norm, final_layer_norm}/{scale, bias}
    model/encoder/layers/N/self_attn/{q,k,v,out}_proj/{kernel [in, out], bias}   (k_proj: no bias)
    model/encoder/layers/N/{fc1, fc2}/{kernel, bias}
    model/encoder/layer_norm/{scale, bias}
    model/decoder/{embed_tokens, embed_positions}/embedding
    model/decoder/layers/N/...   as the encoder's, plus encoder_attn and encoder_attn_layer_norm
    model/decoder/layer_norm/{scale, bias}

Kernels are already in our Flax layout (dense ``[in, out]``, conv ``[width, in, out]``), so
nothing is transposed. The tree may lack the top-level ``model`` key (transformers accepts
both). The read-out is tied to the token embedding: an ``lm_head/kernel`` (present when
``tie_word_embeddings`` is false; a missing ``tie_word_embeddings`` means true, as transformers
omits defaults) must equal the embedding transposed, or the checkpoint is refused. Sharded
checkpoints (``flax_model.msgpack.index.json``) are read too. Everything goes through
:class:`ParamFiller` / :class:`TensorSource`: every leaf consumed, every slot filled, shapes
checked. :func:`save_flax_dir` writes the same tree, in the order transformers writes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.weights.hf import dims_from_hf_config, hf_config_from_dims
from jaxasr_interp.weights.layout import CheckpointError, ParamFiller, TensorSource, iter_paths

FLAX_WEIGHTS = "flax_model.msgpack"
FLAX_INDEX = "flax_model.msgpack.index.json"
_PROJ = (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj"), ("out", "out_proj"))

Row = tuple[str, "int | None", str]  # (our path, layer or None, flax path without "model/")


# ------------------------------------------------------------------------------- the mapping


def _norm(ours: str, theirs: str, layer=None) -> list[Row]:
    return [(f"{ours}/scale", layer, f"{theirs}/scale"), (f"{ours}/bias", layer, f"{theirs}/bias")]


def _dense(ours: str, theirs: str, layer=None, bias: bool = True) -> list[Row]:
    rows = [(f"{ours}/kernel", layer, f"{theirs}/kernel")]
    return rows + ([(f"{ours}/bias", layer, f"{theirs}/bias")] if bias else [])


def _attention(ours: str, theirs: str, layer: int) -> list[Row]:
    return [row for proj, hf in _PROJ for row in _dense(f"{ours}/{proj}", f"{theirs}/{hf}", layer, proj != "key")]


def _layer(stack: str, i: int) -> list[Row]:
    """One block's rows in flax's module-creation order (the order of transformers' files)."""
    ours, theirs = f"{stack}/blocks", f"{stack}/layers/{i}"
    rows = _norm(f"{ours}/attn_ln", f"{theirs}/self_attn_layer_norm", i) + \
        _attention(f"{ours}/attn", f"{theirs}/self_attn", i)
    if stack == "decoder":
        rows += _norm(f"{ours}/cross_attn_ln", f"{theirs}/encoder_attn_layer_norm", i) + \
            _attention(f"{ours}/cross_attn", f"{theirs}/encoder_attn", i)
    return rows + _norm(f"{ours}/mlp_ln", f"{theirs}/final_layer_norm", i) + \
        _dense(f"{ours}/mlp1", f"{theirs}/fc1", i) + _dense(f"{ours}/mlp2", f"{theirs}/fc2", i)


def name_table(dims: Dims) -> list[Row]:
    """Every parameter's (our path, layer, flax path), in the order transformers writes them."""
    rows = _dense("encoder/conv1", "encoder/conv1") + _dense("encoder/conv2", "encoder/conv2")
    rows.append(("encoder/positional_embedding/embedding", None, "encoder/embed_positions/embedding"))
    for i in range(dims.n_audio_layer):
        rows += _layer("encoder", i)
    rows += _norm("encoder/ln_post", "encoder/layer_norm")
    rows += [("decoder/token_embedding/embedding", None, "decoder/embed_tokens/embedding"),
             ("decoder/positional_embedding/embedding", None, "decoder/embed_positions/embedding")]
    for i in range(dims.n_text_layer):
        rows += _layer("decoder", i)
    return rows + _norm("decoder/ln", "decoder/layer_norm")


# ----------------------------------------------------------------------------------- reading


def is_flax_dir(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file() and any(
        (path / n).is_file() for n in (FLAX_WEIGHTS, FLAX_INDEX))


def _flatten(tree, prefix: str, source: str, out: dict) -> dict:
    if not isinstance(tree, Mapping):
        raise CheckpointError(f"{source}: expected a map of parameters, got a {type(tree).__name__}")
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            _flatten(value, path, source, out)
        elif isinstance(value, np.ndarray) and (value.dtype.kind == "f" or value.dtype.name == "bfloat16"):
            if path in out:
                raise CheckpointError(f"{source}: parameter {path!r} stored twice")
            out[path] = value
        else:
            raise CheckpointError(f"{source}: leaf {path!r} is a {type(value).__name__} "
                                  f"{getattr(value, 'dtype', '')}, not a float array")
    return out


def _restore(path: Path, out: dict) -> dict:
    from flax.serialization import msgpack_restore
    try:
        tree = msgpack_restore(path.read_bytes())
    except OSError:
        raise
    except Exception as e:  # msgpack raises many kinds of errors for damaged files
        raise CheckpointError(f"{path}: not a readable Flax msgpack file ({e.__class__.__name__})") from None
    return _flatten(tree, "", str(path), out)


def _weight_files(directory: Path) -> list[Path]:
    if (directory / FLAX_WEIGHTS).is_file():
        return [directory / FLAX_WEIGHTS]
    try:
        shards = sorted(set(json.loads((directory / FLAX_INDEX).read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{directory / FLAX_INDEX}: unreadable shard index ({e.__class__.__name__})") from None
    return [directory / s for s in shards]


def _strip_model(flat: dict, source: str) -> dict:
    """Drop the top-level ``model/`` key when the tree has one (a headless tree has none)."""
    out: dict = {}
    for key, value in flat.items():
        name = key[len("model/"):] if key.startswith("model/") else key
        if name in out:
            raise CheckpointError(f"{source}: {name!r} is stored both under model/ and outside it")
        out[name] = value
    return out


def params_from_flax(flat: Mapping[str, np.ndarray], dims: Dims, *, tied: bool = True,
                     source: str = "Flax checkpoint") -> dict:
    """Flattened leaves (``"encoder/layers/0/fc1/kernel"`` ..., ``model/`` stripped) -> params."""
    tensors = TensorSource(flat, source)
    filler = ParamFiller(dims, source)
    for path, layer, name in name_table(dims):
        filler.put(path, tensors.take(name), layer=layer, origin=name)
    emb = np.asarray(flat["decoder/embed_tokens/embedding"])
    if "lm_head/kernel" in tensors:
        if not np.array_equal(np.asarray(tensors.take("lm_head/kernel")), emb.T):
            raise CheckpointError(f"{source}: lm_head/kernel differs from the token embedding; Whisper ties "
                                  "them and so does this library")
    elif not tied:
        raise CheckpointError(f"{source}: config.json sets tie_word_embeddings false but the checkpoint has "
                              "no lm_head/kernel (transformers would initialise it randomly)")
    tensors.check_all_taken()
    return filler.finish()


def _dims_and_tie(cfg_file: Path) -> tuple[Dims, bool]:
    try:
        cfg = json.loads(cfg_file.read_text())
    except ValueError as e:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_file}: expected a JSON object")
    act = cfg.get("activation_function", "gelu")
    if act != "gelu":  # FlaxWhisper applies ACT2FN[activation_function] in its MLPs
        raise CheckpointError(f"{cfg_file}: activation_function {act!r}; Whisper's (and this library's) is 'gelu'")
    # transformers omits defaults from config.json: a missing tie_word_embeddings is true
    return dims_from_hf_config(cfg), bool(cfg.get("tie_word_embeddings", True))


def load_flax_dir(directory: str | Path) -> tuple[dict, Dims]:
    """``(params, dims)`` from a directory with ``config.json`` + ``flax_model.msgpack`` (or shards)."""
    directory = Path(directory)
    if not is_flax_dir(directory):
        raise CheckpointError(f"{directory}: not a Flax checkpoint directory (needs config.json and {FLAX_WEIGHTS})")
    dims, tied = _dims_and_tie(directory / "config.json")
    flat: dict = {}
    for f in _weight_files(directory):
        _restore(f, flat)
    return params_from_flax(_strip_model(flat, str(directory)), dims, tied=tied, source=str(directory)), dims


# ----------------------------------------------------------------------------------- writing


def flax_tree_from_params(params: Mapping, dims: Dims) -> dict:
    """The nested ``{"model": {...}}`` tree of float32 arrays that transformers' Flax Whisper
    holds, its maps in transformers' (module-creation) order. ``params`` is checked first."""
    flat = dict(iter_paths(params))
    filler = ParamFiller(dims, "params to write")  # the same checks as reading: shapes, no gaps
    tensors = TensorSource(flat, "params to write")
    for path, shape in filler.shapes.items():
        value = np.asarray(tensors.take(path), np.float32)
        if value.shape != shape:
            raise CheckpointError(f"params to write: {path!r} has shape {value.shape}, expected {shape}")
    tensors.check_all_taken()
    tree: dict = {}
    for path, layer, name in name_table(dims):
        value = np.asarray(flat[path], np.float32)
        node = tree
        *parents, last = name.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = np.ascontiguousarray(value if layer is None else value[layer])
    return {"model": tree}


def save_flax_dir(params: Mapping, dims: Dims, directory: str | Path) -> Path:
    """Write ``config.json`` + ``flax_model.msgpack`` that transformers' Flax Whisper loads as is."""
    from flax.serialization import msgpack_serialize
    directory = Path(directory)
    config = hf_config_from_dims(dims)  # refuses unequal encoder and decoder widths
    data = msgpack_serialize(flax_tree_from_params(params, dims), in_place=True)  # in place: keeps key order
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / FLAX_WEIGHTS).write_bytes(data)
    return directory
