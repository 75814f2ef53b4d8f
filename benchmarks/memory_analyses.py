"""The analyses benchmarks/bench_memory.py compiles: each a function and its abstract arguments.

Each builder takes ``(dims, dtype, mesh)`` and returns ``(fn, args, shape description)``; the
arguments are ``jax.ShapeDtypeStruct`` placed as the library places real ones on ``mesh`` (a
1-D mesh of 1 or 8 devices): Whisper's parameters as ``whisper.sharding.shard_params`` splits
them (FSDP, over the mesh's ``"batch"`` axis), Qwen2-Audio's as ``qwen2_audio.shard_params``
(over ``"model"``), batches over the mesh as ``shard_leading`` does, and a sweep's own axis
split inside the program (``core.sharding.map_chunks``, as the library does). Parameters are
stored in the compute dtype (``load(..., dtype="bfloat16")`` for the bfloat16 rows).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

import jaxasr_interp as jai
from jaxasr_interp import qwen2_audio as qa
from jaxasr_interp.lenses.encoder import encoder_lens_ids
from jaxasr_interp.patching import attribution_batch, component_sweep, decode_sweep, head_sweep
from jaxasr_interp.patching.sweeps import family_grid
from jaxasr_interp.probes.features import _decoder_chunk, _encoder_chunk
from jaxasr_interp.probes.sweep import _sweep
from jaxasr_interp.qwen2_audio.sharding import partition_spec as qwen_spec
from jaxasr_interp.qwen2_audio.weights import param_shapes as qwen_shapes
from jaxasr_interp.weights.layout import iter_paths, param_shapes, set_path
from jaxasr_interp.whisper.sharding import partition_spec as whisper_spec
from jaxasr_interp.whisper.sites import n_layers, shape as site_shape

EOT, N_PROMPT = 50257, 4  # Whisper: sot, language, task, notimestamps
SIZES = dict(transcribe_per_device=8, feature_chunk=8, head_tokens=128, alphas=4, probe_n=2000,
             sweep_tokens=128, qwen_text_tokens=18, qwen_new_tokens=64)
# the contextual-bias experiment's families (experiments/contextual_bias.py)
ATTRIBUTION_FAMILIES = ("encoder.block", "encoder.attn", "encoder.mlp", "encoder.head", "decoder.block",
                        "decoder.self_attn", "decoder.cross_attn", "decoder.mlp")


def sds(shape, dtype, mesh, spec=P()):
    return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=NamedSharding(mesh, spec))


def batched(shape, dtype, mesh):
    """Leading (batch / sweep) axis split over the mesh when it divides evenly, as shard_leading."""
    split = mesh.size > 1 and shape[0] % mesh.size == 0
    return sds(shape, dtype, mesh, P(mesh.axis_names[0]) if split else P())


def abstract_params(shapes, dtype, mesh, spec=lambda path, shape: P()):
    out: dict = {}
    for path, shape in iter_paths(shapes):
        set_path(out, path, sds(shape, dtype, mesh, spec(path, shape)))
    return out


def whisper_params(dims, dtype, mesh):
    """Whisper's parameters split as ``whisper.sharding.shard_params`` splits them on ``mesh``."""
    spec = lambda path, shape: whisper_spec(path, shape, mesh.size, mesh.axis_names[0])
    return abstract_params(param_shapes(dims), dtype, mesh, spec)


def whisper_common(dims, dtype, mesh):
    return (whisper_params(dims, dtype, mesh), sds((N_PROMPT,), jnp.int32, mesh),
            sds((dims.n_vocab,), jnp.float32, mesh), dims.n_text_ctx // 2)


def transcribe(dims, dtype, mesh):
    params, prompt, bias, max_new = whisper_common(dims, dtype, mesh)

    def fn(params, mels, prompt, bias):
        features = jai.encode_batch(params, mels, dims=dims, dtype=dtype)
        return jai.greedy_decode(params, features, prompt, EOT, bias, bias, dims=dims,
                                 max_new_tokens=max_new, dtype=dtype)
    batch = SIZES["transcribe_per_device"] * mesh.size  # transcribe_ids' default batch_size, a device
    mels = batched((batch, dims.n_mels, dims.n_samples_frames), jnp.float32, mesh)
    return fn, (params, mels, prompt, bias), f"batch {batch}, {max_new} new tokens"


def encoder_lens(dims, dtype, mesh):
    """One utterance a device; its rows (layers) split over the devices, 8 decoded at once."""
    params, prompt, bias, max_new = whisper_common(dims, dtype, mesh)
    fn = functools.partial(encoder_lens_ids, dims=dims, max_new_tokens=max_new, row_chunk=8, dtype=dtype)
    mels = batched((mesh.size, dims.n_mels, dims.n_samples_frames), jnp.float32, mesh)
    args = (params, mels, prompt, sds((), jnp.int32, mesh), bias, bias)
    layers = f"{dims.n_audio_layer} layers, rows 8 at a time"
    return fn, args, f"{mesh.size} utterance(s) x {layers}, {max_new} new tokens"


def feature_encoder(dims, dtype, mesh):
    n = SIZES["feature_chunk"]
    args = (whisper_params(dims, dtype, mesh),
            batched((n, dims.n_mels, dims.n_samples_frames), jnp.float32, mesh), batched((n,), jnp.int32, mesh))
    return functools.partial(_encoder_chunk, dims=dims, dtype=dtype, precision="highest"), args, f"chunk {n}"


def feature_decoder(dims, dtype, mesh):
    n, width = SIZES["feature_chunk"], N_PROMPT + dims.n_text_ctx // 2 + 1
    args = (whisper_params(dims, dtype, mesh),
            batched((n, dims.n_audio_ctx, dims.n_audio_state), dtype, mesh),
            batched((n, width), jnp.int32, mesh), batched((n,), jnp.int32, mesh))
    fn = functools.partial(_decoder_chunk, dims=dims, dtype=dtype, precision="highest")
    return fn, args, f"chunk {n}, {width} tokens"


def _ref(site, dims, t, mesh, dtype=jnp.float32, lead=()):
    return sds(lead + (n_layers(site, dims),) + tuple(site_shape(site, dims, t)), dtype, mesh)


def cross_head_sweep(dims, dtype, mesh):
    """One utterance; each layer's heads x alphas split over the devices."""
    t, site, n_alpha = SIZES["head_tokens"], "decoder.cross_attn.z", SIZES["alphas"]
    fn = lambda p, tok, af, r, a: head_sweep(p, tok, af, r, a, dims=dims, site=site, dtype=dtype)
    args = (whisper_params(dims, dtype, mesh), sds((t,), jnp.int32, mesh),
            sds((dims.n_audio_ctx, dims.n_audio_state), dtype, mesh), _ref(site, dims, t, mesh),
            sds((n_alpha,), jnp.float32, mesh))
    return fn, args, f"1 utterance, {t} tokens, {dims.n_text_layer}x{dims.n_text_head} heads x {n_alpha} alphas"


def encoder_head_sweep(dims, dtype, mesh):
    """component_sweep of every encoder head (each patch reruns the encoder from its layer and
    the whole decoder), 8 patches a device at a time."""
    t, family, site = SIZES["sweep_tokens"], "encoder.head", "encoder.attn.z"
    fn = lambda p, mel, tok, r, a: component_sweep(p, mel, tok, r, a, dims=dims, family=family, dtype=dtype)
    args = (whisper_params(dims, dtype, mesh), sds((dims.n_mels, dims.n_samples_frames), jnp.float32, mesh),
            sds((t,), jnp.int32, mesh), _ref(site, dims, t, mesh), sds((2,), jnp.float32, mesh))
    return fn, args, f"1 utterance, {t} tokens, {dims.n_audio_layer}x{dims.n_audio_head} heads x 2 alphas, chunk 8"


def cross_head_decode_sweep(dims, dtype, mesh):
    """decode_sweep of every decoder cross-attention head (one alpha), 16 decodings a device at a time."""
    max_new, site = dims.n_text_ctx // 2, "decoder.cross_attn.z"
    weights = family_grid("decoder.cross_head", dims, [1.0])[1]
    fn = lambda p, af, prompt, r, w: decode_sweep(p, af, prompt, EOT, {site: r}, {site: w}, dims=dims,
                                                  max_new_tokens=max_new, dtype=dtype)
    args = (whisper_params(dims, dtype, mesh), sds((dims.n_audio_ctx, dims.n_audio_state), dtype, mesh),
            sds((N_PROMPT,), jnp.int32, mesh), _ref(site, dims, N_PROMPT + max_new, mesh),
            sds(weights.shape, jnp.float32, mesh))
    return fn, args, f"1 utterance, {weights.shape[0]} patches, {max_new} new tokens, chunk 16"


def attribution(dims, dtype, mesh, remat=False):
    """attribution_batch: one utterance a device, the contextual-bias experiment's 8 families
    (``remat``: each layer recomputed in the backward pass)."""
    n, t = mesh.size, SIZES["sweep_tokens"]
    fams = ATTRIBUTION_FAMILIES
    fn = lambda p, mels, tok, refs, w: attribution_batch(p, mels, tok, refs, w, dims=dims, families=fams,
                                                         dtype=dtype, remat=remat)
    refs = {f: _ref(jai.FAMILIES[f], dims, t, mesh, lead=(n,)) for f in fams}
    refs = {f: batched(r.shape, r.dtype, mesh) for f, r in refs.items()}
    args = (whisper_params(dims, dtype, mesh), batched((n, dims.n_mels, dims.n_samples_frames), jnp.float32, mesh),
            batched((n, t), jnp.int32, mesh), refs, batched((n, t - 1), jnp.float32, mesh))
    return fn, args, f"{n} utterance(s), {t} tokens, {len(fams)} families" + (", remat" if remat else "")


def attribution_remat(dims, dtype, mesh):
    return attribution(dims, dtype, mesh, remat=True)


def probe_sweep(dims, dtype, mesh):
    layers, n, d = dims.n_audio_layer + dims.n_text_layer, SIZES["probe_n"], dims.n_audio_state
    fn = functools.partial(_sweep, k=5, max_iter=100, tol=1e-4, precision="highest")
    args = (batched((layers, n, d), jnp.float32, mesh), batched((layers, d, n), jnp.float32, mesh),
            sds((2, 1, n), jnp.int32, mesh), sds((2, 1, n), jnp.int32, mesh), sds((2, 1), jnp.bool_, mesh),
            sds((3,), jnp.float32, mesh))
    return fn, args, f"{layers} layers, n={n}, d={d}, 1 binary target + control, 5 folds, 3 l2"


def qwen_inputs(dims, dtype, mesh):
    spec = lambda path, shape: qwen_spec(path, shape, mesh.size, mesh.axis_names[0])
    n_prompt = dims.n_audio_tokens + SIZES["qwen_text_tokens"]
    return (abstract_params(qwen_shapes(dims), dtype, mesh, spec),
            sds((dims.n_mels, dims.n_samples_frames), jnp.float32, mesh), n_prompt)


def qwen_forward(dims, dtype, mesh):
    params, mel, n_prompt = qwen_inputs(dims, dtype, mesh)
    t = n_prompt + SIZES["qwen_new_tokens"]
    fn = lambda p, m, tok: qa.forward(p, m, tok, dims=dims, dtype=dtype)[0]
    return fn, (params, mel, sds((t,), jnp.int32, mesh)), f"{t} tokens teacher-forced"


def qwen_generate(dims, dtype, mesh):
    params, mel, n_prompt = qwen_inputs(dims, dtype, mesh)
    new = SIZES["qwen_new_tokens"]
    fn = lambda p, m, prompt, eos: qa.generate(p, m, prompt, eos, dims=dims, max_new_tokens=new, dtype=dtype)
    args = (params, mel, sds((n_prompt,), jnp.int32, mesh), sds((2,), jnp.int32, mesh))
    return fn, args, f"prompt {n_prompt}, {new} new tokens"


BOTH = ("float32", "bfloat16")
# name -> (builder, model, dtypes: bfloat16 wherever the function takes dtype=, mesh axis name)
ANALYSES = {
    "transcribe": (transcribe, "large-v3", BOTH, "batch"),
    "encoder_lens": (encoder_lens, "large-v3", BOTH, "batch"),
    "feature_chunk_encoder": (feature_encoder, "large-v3", BOTH, "batch"),
    "feature_chunk_decoder": (feature_decoder, "large-v3", BOTH, "batch"),
    "head_sweep": (cross_head_sweep, "large-v3", BOTH, "batch"),
    "component_sweep": (encoder_head_sweep, "large-v3", BOTH, "batch"),
    "decode_sweep": (cross_head_decode_sweep, "large-v3", BOTH, "batch"),
    "attribution": (attribution, "large-v3", BOTH, "batch"),
    "attribution_remat": (attribution_remat, "large-v3", BOTH, "batch"),
    "probe_sweep": (probe_sweep, "large-v3", ("float32",), "batch"),
    "qwen_forward": (qwen_forward, "qwen2-audio-7b", BOTH, "model"),
    "qwen_generate": (qwen_generate, "qwen2-audio-7b", BOTH, "model"),
}
