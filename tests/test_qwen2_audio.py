"""Qwen2-Audio in JAX against transformers' eager PyTorch Qwen2AudioForConditionalGeneration on
tiny random configs (odd head counts, grouped-query attention, a partial and a full audio, an
audio encoder whose MLP width is not 4 x d_model), with prompts built by transformers'
Qwen2AudioProcessor and its chat template."""

from __future__ import annotations

import json
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.sharding import PartitionSpec as P

from jaxasr_interp import qwen2_audio as qa
from jaxasr_interp.core.edits import interpolate, zero
from jaxasr_interp.lenses.logit import LogitLens
from jaxasr_interp.qwen2_audio.prompt import valid_frames
from jaxasr_interp.whisper.sites import SiteError
from jaxasr_interp.weights import CheckpointError
from jaxasr_interp.weights.layout import iter_paths
from qwen_ref import AUDIO_TOKEN_ID, SAMPLE_RATE, params_of, random_model, reference_run, tiny_processor

TOL = 1e-4
CONFIGS = {
    # 25 encoder positions: an odd count, so the average pooling drops one (as AvgPool1d does)
    "gqa3-partial-audio": (qa.QwenAudioDims(
        n_mels=13, n_audio_ctx=25, n_audio_state=34, n_audio_head=2, n_audio_layer=2, n_vocab=101,
        n_text_state=42, n_text_head=3, n_kv_head=1, n_text_layer=3, n_text_ffn=67, n_text_ctx=96,
        audio_token_id=AUDIO_TOKEN_ID, rope_theta=1000.0, rms_eps=1e-6), 12345),
    "gqa2-full-audio": (qa.QwenAudioDims(
        n_mels=11, n_audio_ctx=25, n_audio_state=30, n_audio_head=5, n_audio_layer=3, n_vocab=89,
        n_text_state=56, n_text_head=4, n_kv_head=2, n_text_layer=2, n_text_ctx=80, n_text_ffn=61,
        audio_token_id=AUDIO_TOKEN_ID, rope_theta=10000.0, rms_eps=1e-5), SAMPLE_RATE),
    # encoder_ffn_dim 97 (a prime, not 4 x 38): transformers builds and runs it, and so must we
    "ffn-prime-partial-audio": (qa.QwenAudioDims(
        n_mels=13, n_audio_ctx=25, n_audio_state=38, n_audio_head=2, n_audio_layer=2, n_audio_ffn=97,
        n_vocab=103, n_text_state=30, n_text_head=3, n_kv_head=3, n_text_layer=2, n_text_ffn=43,
        n_text_ctx=96, audio_token_id=AUDIO_TOKEN_ID, rope_theta=10000.0, rms_eps=1e-6), 9001),
}
CONVERSATION = [{"role": "user", "content": [{"type": "audio", "audio": "speech.wav"},
                                             {"type": "text", "text": "What does the speaker say?"}]}]


def _build(name):
    dims, n_samples = CONFIGS[name]
    model = random_model(dims, seed=len(name))
    processor = tiny_processor(dims)
    audio = np.random.default_rng(3).standard_normal(n_samples).astype(np.float32) * 0.1
    text = processor.apply_chat_template(CONVERSATION, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], audio=[audio], sampling_rate=SAMPLE_RATE, return_tensors="np")
    ids, features = inputs["input_ids"][0].astype(np.int32), inputs["input_features"][0].astype(np.float32)
    fmask = inputs["feature_attention_mask"][0]
    params = jax.tree_util.tree_map(jnp.asarray, params_of(model, dims))
    return types.SimpleNamespace(name=name, dims=dims, model=model, processor=processor, audio=audio, text=text, ids=ids,
                                 mel=features, fmask=fmask, n_frames=int(fmask.sum()), params=params,
                                 ref=reference_run(model, ids, features, fmask))


@pytest.fixture(scope="module", params=list(CONFIGS))
def case(request):
    return _build(request.param)


@pytest.fixture(scope="module")
def one():
    return _build("gqa3-partial-audio")


def _forward(c, **kwargs):
    return qa.forward(c.params, c.mel, c.ids, dims=c.dims, n_frames=c.n_frames, **kwargs)


def test_prompt_matches_the_processor(case):
    tok = case.processor.tokenizer
    assert qa.render_chat(CONVERSATION) == case.text
    assert valid_frames(len(case.audio), case.dims.n_samples_frames, SAMPLE_RATE // case.dims.n_samples_frames) \
        == case.n_frames
    ids = qa.prompt_ids(tok, qa.chat_text(CONVERSATION), [case.n_frames])
    np.testing.assert_array_equal(ids, case.ids)
    assert (ids == AUDIO_TOKEN_ID).sum() == qa.audio_tokens_for(case.n_frames) > 0


def test_every_site_matches_reference(case):
    logits, acts = _forward(case, capture=["*"])
    acts["logits"] = logits
    assert set(case.ref) == set(qa.ALL_SITES)  # the reference reaches every site
    for name, want in case.ref.items():
        got = np.asarray(acts[name])
        assert got.shape == want.shape, (name, got.shape, want.shape)
        layers = qa.sites.n_layers(name, case.dims)  # the vocabulary's shapes (mlp.hidden: FFN widths)
        assert ((layers,) if layers else ()) + qa.sites.shape(name, case.dims, len(case.ids)) == want.shape, name
        err = np.abs(got - want).max()
        assert err <= TOL, (name, err)
        assert want.std() > 1e-2, f"{name} is degenerate; the comparison would prove nothing"
    # padded frames (the partial-audio config) are hidden keys: exactly zero attention
    n_valid = (case.n_frames - 1) // 2 + 1
    assert (n_valid < case.dims.n_audio_ctx) == ("partial" in case.name)
    pattern = np.asarray(acts["encoder.attn.pattern"])
    assert np.all(pattern[..., n_valid:] == 0) and np.allclose(pattern[..., :n_valid].sum(-1), 1, atol=1e-5)


def test_kv_cache_decoding_equals_teacher_forcing(one):
    """A sequence in two equal blocks through the KV cache, one compiled program: the audio
    tokens are moved to the front so that the second block holds none (passing the audio
    embeddings again then changes nothing). Single-token steps: the greedy-decoding test."""
    dims = one.dims
    is_audio = one.ids == AUDIO_TOKEN_ID
    ids = np.concatenate([one.ids[is_audio], one.ids[~is_audio]])
    half = len(ids) // 2
    assert is_audio.sum() <= half
    want = reference_run(one.model, ids, one.mel, one.fmask)["logits"]
    embeds, _ = qa.encode(one.params, one.mel, dims=dims, n_frames=one.n_frames)
    cache = qa.init_cache(dims, 2 * half)
    rows = []
    for start in (0, half):
        logits, _, cache = qa.decode(one.params, ids[start:start + half], embeds, dims=dims, cache=cache, offset=start)
        rows.append(np.asarray(logits))
    assert np.abs(np.concatenate(rows) - want[:2 * half]).max() <= TOL


def _zero_output(m, i, o):
    if isinstance(o, tuple):  # attention modules return (output, weights)
        return (torch.zeros_like(o[0]),) + tuple(o[1:])
    return torch.zeros_like(o)


def _torch_generate(c, n_new, eos, hooks=()):
    handles = [m.register_forward_hook(fn) for m, fn in hooks]
    try:
        with torch.no_grad():
            out = c.model.generate(
                input_ids=torch.as_tensor(c.ids).long()[None], attention_mask=torch.ones(1, len(c.ids), dtype=torch.long),
                input_features=torch.as_tensor(c.mel)[None], feature_attention_mask=torch.as_tensor(c.fmask).long()[None],
                max_new_tokens=n_new, do_sample=False, eos_token_id=eos.tolist(), pad_token_id=int(eos[0]))
    finally:
        for h in handles:
            h.remove()
    out = out[0, len(c.ids):].numpy()
    return np.concatenate([out, np.full(n_new - len(out), eos[0])])


def test_greedy_decoding_equals_transformers_generate_with_and_without_an_edit(one):
    eos, n_new, layer = qa.end_ids(one.processor.tokenizer), 7, 1

    def ours(alpha):  # alpha is data: both runs share one compiled decoding loop
        return np.asarray(qa.generate(one.params, one.mel, one.ids, eos, dims=one.dims, n_frames=one.n_frames,
                                      max_new_tokens=n_new, edits={"decoder.mlp_out": zero(layers=[layer], alpha=alpha)}))
    plain, edited = ours(0.0), ours(1.0)
    np.testing.assert_array_equal(plain, _torch_generate(one, n_new, eos))
    mlp = one.model.model.language_model.layers[layer].mlp
    np.testing.assert_array_equal(edited, _torch_generate(one, n_new, eos, [(mlp, _zero_output)]))
    assert not np.array_equal(plain, edited)  # the edit changed the answer, so the check bites
    with pytest.raises(ValueError, match="cannot be edited during cached decoding"):
        qa.generate(one.params, one.mel, one.ids, eos, dims=one.dims, n_frames=one.n_frames, max_new_tokens=2,
                    edits={"decoder.attn.pattern": zero()})


def test_logit_lens_last_layer_equals_logits(one):
    """The lens's pure core on the residuals of a run (the capture-everything run of the parity
    test, so no new forward program is compiled here), read as ``logit_lens`` reads them."""
    sites = qa.lens.LENS_SITES
    logits, acts = _forward(one, capture=["*"])
    resids = jnp.stack([acts[f"decoder.{s}"] for s in sites])
    out = map(np.asarray, qa.lens.lens_readout(one.params, logits, resids, dims=one.dims, sites=sites, k=5))
    lens = LogitLens(sites, one.ids, *out)
    post = lens.site("resid_post")
    np.testing.assert_array_equal(lens.final_ids, np.argmax(one.ref["logits"], -1))
    np.testing.assert_array_equal(post["top_ids"][-1, :, 0], lens.final_ids)
    assert np.all(post["final_rank"][-1] == 0) and np.abs(post["kl"][-1]).max() < 1e-5
    ref_p = np.asarray(jax.nn.softmax(one.ref["logits"], -1))
    np.testing.assert_allclose(post["final_prob"][-1], np.take_along_axis(ref_p, lens.final_ids[:, None], -1)[:, 0],
                               atol=1e-5)
    assert lens.saturation.shape == one.ids.shape and np.all(lens.saturation <= one.dims.n_text_layer - 1)
    assert post["kl"][0].mean() > 1e-2  # the first layer is not already the answer
    for bad in ({"sites": ("resid_pre", "resid_post")}, {"sites": ("resid_mid",)}, {"k": 0}):
        with pytest.raises(ValueError, match="logit lens sites|k must be"):
            qa.logit_lens(one.params, one.mel, one.ids, dims=one.dims, n_frames=one.n_frames, **bad)


def test_edits_match_hooked_torch_in_one_vmapped_program(one):
    """Five interventions as data, run as one vmap: the identity, zero-ablation of one LLM
    layer's attn_out, one query head of attn.z, a full patch of the last resid_post from
    another input, and zero-ablation of one encoder layer's attn_out; each equals the same
    intervention made with PyTorch hooks."""
    dims, model = one.dims, one.model
    lm, enc = model.model.language_model, model.model.audio_tower
    L, head, dh = dims.n_text_layer, 2, dims.d_head
    mel2 = np.random.default_rng(9).standard_normal(one.mel.shape).astype(np.float32)
    other = reference_run(model, one.ids, mel2, one.fmask)

    def zero_head(m, args):
        z = args[0].clone()
        z[..., head * dh:(head + 1) * dh] = 0
        return (z,)
    h = lm.layers[0].self_attn.o_proj.register_forward_pre_hook(zero_head)
    try:
        head_ref = reference_run(model, one.ids, one.mel, one.fmask)["logits"]
    finally:
        h.remove()
    want = [one.ref["logits"],
            reference_run(model, one.ids, one.mel, one.fmask, [(lm.layers[1].self_attn, _zero_output)])["logits"],
            head_ref, other["logits"],
            reference_run(model, one.ids, one.mel, one.fmask, [(enc.layers[0].self_attn, _zero_output)])["logits"]]
    n = len(want)
    enc_mask = np.zeros((n, dims.n_audio_layer), np.float32)
    enc_mask[4, 0] = 1
    attn_mask = np.zeros((n, L), np.float32)
    attn_mask[1, 1] = 1
    z_mask = np.zeros((n, L, 1, dims.n_text_head), np.float32)  # [L, T, H] aligned from the left
    z_mask[2, 0, 0, head] = 1
    alpha = np.zeros(n, np.float32)
    alpha[3] = 1

    def run(me, ma, mz, a):
        edits = {"encoder.attn_out": zero(mask=me), "decoder.attn_out": zero(mask=ma), "decoder.attn.z": zero(mask=mz),
                 "decoder.resid_post": interpolate(other["decoder.resid_post"], a, layers=[L - 1])}
        return qa.forward(one.params, one.mel, one.ids, dims=dims, n_frames=one.n_frames, edits=edits)[0]
    got = np.asarray(jax.vmap(run)(enc_mask, attn_mask, z_mask, alpha))
    for i, w in enumerate(want):
        assert np.abs(got[i] - w).max() <= TOL, i
        assert i == 0 or np.abs(w - one.ref["logits"]).max() > 1e-2, f"intervention {i} changed nothing"


def test_bad_inputs_are_clear_errors(one):
    with pytest.raises(SiteError, match="unknown Qwen2-Audio site 'decoder.self_attn_out'; did you mean"):
        _forward(one, capture=["decoder.self_attn_out"])
    with pytest.raises(ValueError, match=r"mel has shape .* expected"):
        qa.forward(one.params, one.mel[:, :-2], one.ids, dims=one.dims, n_frames=one.n_frames)
    with pytest.raises(ValueError, match="audio tokens"):
        qa.forward(one.params, one.mel, one.ids[one.ids != AUDIO_TOKEN_ID], dims=one.dims, n_frames=one.n_frames)


# ----------------------------------------------------------------------------------- weights


def _same(a, b):
    fa, fb = dict(iter_paths(a)), dict(iter_paths(b))
    assert fa.keys() == fb.keys()
    for k in fa:
        assert np.array_equal(np.asarray(fa[k]), np.asarray(fb[k])), k


def test_sharded_safetensors_hub_cache_and_orbax(one, tmp_path, monkeypatch):
    saved = tmp_path / "hf"
    one.model.save_pretrained(saved, max_shard_size="40KB")
    index = json.loads((saved / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2 and not (saved / "model.safetensors").exists()
    params, dims = qa.load_weights(saved)
    assert dims == one.dims
    _same(params, one.params)
    # the same files as a hub id in huggingface_hub's cache, offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "home" / "hub" / "models--someone--qwen2-audio-tiny"
    shutil.copytree(saved, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    params, dims = qa.load_weights("someone/qwen2-audio-tiny")
    assert dims == one.dims
    _same(params, one.params)
    qa.save_params(params, dims, tmp_path / "orbax")
    again, dims2 = qa.load_weights(tmp_path / "orbax")
    assert dims2 == dims
    _same(again, one.params)


def test_audio_ffn_width_comes_from_the_checkpoint(tmp_path):
    """encoder_ffn_dim != 4 x d_model: read from config.json, kept by save_params, and a dims
    file written before the field existed still loads (with the default width)."""
    dims, _ = CONFIGS["ffn-prime-partial-audio"]
    model = random_model(dims, seed=3)
    model.save_pretrained(tmp_path / "hf")
    params, got = qa.load_weights(tmp_path / "hf")
    assert got == dims and got.n_audio_ffn == 97 != 4 * got.n_audio_state
    _same(params, params_of(model, dims))
    assert params["encoder"]["blocks"]["mlp1"]["kernel"].shape == (2, 38, 97)
    qa.save_params(params, got, tmp_path / "orbax")
    again, got2 = qa.load_weights(tmp_path / "orbax")
    assert got2 == dims
    _same(again, params)
    default = CONFIGS["gqa2-full-audio"][0]
    old = tmp_path / "old"
    qa.save_params(_zeros(default), default, old)
    raw = json.loads((old / qa.weights.DIMS_FILE).read_text())
    del raw["n_audio_ffn"]
    (old / qa.weights.DIMS_FILE).write_text(json.dumps(raw))
    assert qa.load_weights(old)[1] == default and default.n_audio_ffn == 4 * default.n_audio_state


def _zeros(dims):
    out = {}
    for path, shape in iter_paths(qa.weights.param_shapes(dims)):
        node = out
        *parents, last = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = np.zeros(shape, np.float32)
    return out


def test_legacy_hub_names_and_checkpoint_errors(one, tmp_path):
    from safetensors.numpy import save_file
    sd = qa.state_dict_from_params(one.params, one.dims)
    renames = (("model.audio_tower.", "audio_tower."), ("model.multi_modal_projector.", "multi_modal_projector."),
               ("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."))
    legacy = {}
    for k, v in sd.items():  # the hub checkpoints' names
        old, new = next(r for r in renames if k.startswith(r[0]))
        legacy[new + k[len(old):]] = v
    assert set(legacy).isdisjoint(sd)
    one.model.config.save_pretrained(tmp_path / "a")
    save_file(legacy, str(tmp_path / "a" / "model.safetensors"))
    params, _ = qa.load_weights(tmp_path / "a")
    _same(params, one.params)
    gone = "model.language_model.layers.2.mlp.up_proj.weight"
    cases = {"missing": ({k: v for k, v in sd.items() if k != gone}, f"missing tensor '{gone}'"),
             "extra": ({**sd, "model.extra.weight": np.zeros(3, np.float32)},
                       "unexpected tensors not part of a Qwen2-Audio model: model.extra.weight"),
             "shape": ({**sd, "lm_head.weight": sd["lm_head.weight"][:-1]},
                       r"'lm_head.weight' has shape \(42, 100\), expected \(42, 101\)")}
    for name, (bad, message) in cases.items():
        with pytest.raises(CheckpointError, match=message):
            qa.params_from_state_dict(bad, one.dims, source=name)
    # bfloat16 safetensors (as the real checkpoints are) read exactly, through ml_dtypes
    from safetensors.torch import save_file as save_torch
    bf16 = {k: v.to(torch.bfloat16).contiguous() for k, v in one.model.state_dict().items()}
    one.model.config.save_pretrained(tmp_path / "b")
    save_torch(bf16, str(tmp_path / "b" / "model.safetensors"))
    params, _ = qa.load_weights(tmp_path / "b")
    _same(params, qa.params_from_state_dict({k: v.float().numpy() for k, v in bf16.items()}, one.dims))
    assert not np.array_equal(params["decoder"]["token_embedding"]["embedding"], one.params["decoder"]["token_embedding"]["embedding"])
    (tmp_path / "b" / "model.safetensors").write_bytes((tmp_path / "b" / "model.safetensors").read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        qa.load_weights(tmp_path / "b")


def test_bfloat16_on_a_mesh_and_the_7b_memory_estimate(one):
    """The 7B path on a (one-device) mesh: parameters placed by shard_params in bfloat16, and
    the LLM run in bfloat16: close to the float32 reference, but not equal to it."""
    with pytest.raises(ValueError, match="automatic axes"):
        qa.shard_params(one.params, jax.make_mesh((1,), ("model",), axis_types=(jax.sharding.AxisType.Explicit,)))
    mesh = jax.make_mesh((1,), ("model",), axis_types=(jax.sharding.AxisType.Auto,))
    sharded = qa.shard_params(one.params, mesh, dtype=jnp.bfloat16)
    down = sharded["decoder"]["blocks"]["mlp"]["down"]["kernel"]
    assert down.sharding.spec == P(None, "model", None) and down.dtype == jnp.bfloat16
    logits, _ = qa.decode(sharded, one.ids, one.ref["encoder.proj"], dims=one.dims, dtype=jnp.bfloat16)
    err = np.abs(np.asarray(logits) - one.ref["logits"]).max()
    assert logits.dtype == jnp.float32 and 1e-4 < err < 0.1 * np.abs(one.ref["logits"]).max()
    # the real 7B configuration traces end to end (shapes only: nothing is allocated)
    big = qa.QWEN2_AUDIO_7B
    shapes = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s, jnp.bfloat16), qa.weights.param_shapes(big),
                                    is_leaf=lambda x: isinstance(x, tuple))
    tokens = np.full(big.n_audio_tokens + 20, 7, np.int32)
    tokens[5:5 + big.n_audio_tokens] = big.audio_token_id
    out = jax.eval_shape(lambda p, m: qa.forward(p, m, tokens, dims=big, dtype=jnp.bfloat16)[0], shapes,
                         jax.ShapeDtypeStruct((big.n_mels, big.n_samples_frames), jnp.float32))
    assert out.shape == (len(tokens), big.n_vocab) and out.dtype == jnp.float32
    est = qa.memory_estimate(qa.QWEN2_AUDIO_7B, bytes_per_param=2, n_devices=4)
    # the hub lists Qwen2-Audio-7B at 8.4B parameters (encoder + projector + Qwen-7B LLM)
    assert 8.35e9 < est["n_params"] < 8.45e9
    replicated = est["n_params"] - sum(np.prod(s) for p, s in iter_paths(qa.weights.param_shapes(qa.QWEN2_AUDIO_7B))
                                       if qa.sharding.partition_spec(p, s, 4) != P())
    assert est["param_bytes_per_device"] == 2 * (replicated + (est["n_params"] - replicated) // 4)
    assert 6e8 < replicated < 7e8  # the audio encoder (0.64 B), projector and norms stay whole
