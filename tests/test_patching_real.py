"""Patching tiny.en on real speech against hooked PyTorch, teacher forced with the clean run's
tokens and a seeded white-noise reference (the paper's setting): logits within 2e-3.

Also: a vmapped sweep over (layer, head) masks equals a loop of single edits; ``encode_from``
resumes the encoder at the edited layer and equals the full pass; ``transcribe(edits=...)``
equals the argmax of the edited teacher-forced pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.modeling_outputs import BaseModelOutput

import jaxasr_interp as jai
from torch_ref import torch_model_from_params

TOL = 2e-3
CLIP = "sense_and_sensibility_01_austen_64kb-0870.wav"


@pytest.fixture(scope="module")
def setup():
    model = jai.load("tiny.en")
    torch_model = torch_model_from_params(jax.tree_util.tree_map(np.asarray, model.params), model.dims)
    audio = jai.sample_path(CLIP)
    ids = jai.transcribe_ids(model, [audio], batch_size=1)[0]
    tokens = jnp.asarray(model.tokenizer.prompt() + ids, jnp.int32)
    mel = jai.log_mel(jai.load_audio(audio), n_mels=model.dims.n_mels)
    noise = jai.log_mel(jai.white_noise(seed=0), n_mels=model.dims.n_mels)
    capture = ["encoder.resid_pre", "encoder.resid_post", "decoder.cross_attn_out", "decoder.cross_attn.z"]
    _, ref = jai.forward(model.params, noise, tokens, dims=model.dims, capture=capture)
    _, clean = jai.forward(model.params, mel, tokens, dims=model.dims, capture=["encoder.resid_pre"])
    with torch.no_grad():
        enc = torch_model.model.encoder(torch.from_numpy(np.asarray(mel))[None]).last_hidden_state
    return model, torch_model, mel, tokens, ref, clean, enc


def torch_logits(torch_model, tokens, hooks, *, mel=None, enc=None):
    """Logits of the hooked PyTorch model; ``enc`` reuses a clean encoder output."""
    handles = [m.register_forward_hook(fn) if kind == "out" else m.register_forward_pre_hook(fn)
               for m, kind, fn in hooks]
    kwargs = ({"input_features": torch.from_numpy(np.asarray(mel))[None]} if enc is None
              else {"encoder_outputs": BaseModelOutput(last_hidden_state=enc)})
    try:
        with torch.no_grad():
            out = torch_model(decoder_input_ids=torch.from_numpy(np.asarray(tokens)).long()[None], **kwargs)
    finally:
        for h in handles:
            h.remove()
    return out.logits[0].numpy()


def with_first(output, new):
    """A hook's replacement output, keeping the module's output structure."""
    return (new,) + tuple(output[1:]) if isinstance(output, tuple) else new


def mix(value, ref, alpha):
    return (1 - alpha) * value + alpha * torch.from_numpy(np.asarray(ref))[None]


def test_cross_attention_output_interpolation_matches_hooked_pytorch(setup):
    model, torch_model, mel, tokens, ref, _, enc = setup
    features, _ = jai.encode(model.params, mel, dims=model.dims)
    for layer in range(model.dims.n_text_layer):
        attn = torch_model.model.decoder.layers[layer].encoder_attn
        for alpha in (0.5, 1.0):
            hook = (attn, "out", lambda m, i, o, r=ref["decoder.cross_attn_out"][layer], a=alpha:
                    with_first(o, mix(o[0] if isinstance(o, tuple) else o, r, a)))
            want = torch_logits(torch_model, tokens, [hook], enc=enc)
            got, _ = jai.decode(model.params, tokens, features, dims=model.dims, edits={
                "decoder.cross_attn_out": jai.interpolate(ref["decoder.cross_attn_out"], alpha, layers=[layer])})
            assert np.abs(np.asarray(got) - want).max() <= TOL, (layer, alpha)


def test_a_vmapped_layer_by_head_sweep_equals_single_patches_and_hooked_pytorch(setup):
    model, torch_model, mel, tokens, ref, _, enc = setup
    dims = model.dims
    n_layer, n_head, dh = dims.n_text_layer, dims.n_text_head, dims.n_text_state // dims.n_text_head
    features, _ = jai.encode(model.params, mel, dims=dims)
    z_ref = ref["decoder.cross_attn.z"]
    masks = jnp.eye(n_layer * n_head).reshape(-1, n_layer, 1, n_head)  # [L*H patches, L, T, H]

    def one(mask):
        edit = {"decoder.cross_attn.z": jai.interpolate(z_ref, 1.0, mask=mask)}
        return jai.decode(model.params, tokens, features, dims=dims, edits=edit)[0]

    swept = np.asarray(jax.jit(jax.vmap(one))(masks))
    for layer in range(n_layer):
        out_proj = torch_model.model.decoder.layers[layer].encoder_attn.out_proj
        for head in range(n_head):
            def patch(m, args, h=head, r=torch.from_numpy(np.asarray(z_ref[layer]))):
                z = args[0].clone().view(1, len(tokens), n_head, dh)
                z[0, :, h] = r[:, h]
                return (z.view(1, len(tokens), -1),)

            want = torch_logits(torch_model, tokens, [(out_proj, "pre", patch)], enc=enc)
            got = swept[layer * n_head + head]
            assert np.abs(got - want).max() <= TOL, (layer, head)
            if head in (0, n_head - 1):  # the sweep is the loop of single edits, to float32 rounding
                single, _ = jai.decode(model.params, tokens, features, dims=dims, edits={
                    "decoder.cross_attn.z": jai.interpolate(z_ref, 1.0, layers=[layer], heads=[head])})
                assert np.abs(got - np.asarray(single)).max() <= 1e-4


def test_mlp_zero_ablation_matches_pytorch_with_the_module_zeroed(setup):
    model, torch_model, mel, tokens, _, _, enc = setup
    features, _ = jai.encode(model.params, mel, dims=model.dims)
    for layer in range(model.dims.n_text_layer):
        fc2 = torch_model.model.decoder.layers[layer].fc2
        want = torch_logits(torch_model, tokens, [(fc2, "out", lambda m, i, o: torch.zeros_like(o))], enc=enc)
        got, _ = jai.decode(model.params, tokens, features, dims=model.dims,
                            edits={"decoder.mlp_out": jai.zero(layers=[layer])})
        assert np.abs(np.asarray(got) - want).max() <= TOL, layer


def test_encoder_block_output_patch_matches_pytorch_and_resumes_at_the_edited_layer(setup):
    model, torch_model, mel, tokens, ref, clean, _ = setup
    dims = model.dims
    for layer in range(dims.n_audio_layer):
        block = torch_model.model.encoder.layers[layer]
        hook = (block, "out", lambda m, i, o, r=ref["encoder.resid_post"][layer]:
                with_first(o, mix(o[0] if isinstance(o, tuple) else o, r, 1.0)))
        want = torch_logits(torch_model, tokens, [hook], mel=mel)
        edits = {"encoder.resid_post": jai.interpolate(ref["encoder.resid_post"], 1.0, layers=[layer])}
        full, _ = jai.encode(model.params, mel, dims=dims, edits=edits)
        resumed, _ = jai.encode_from(model.params, clean["encoder.resid_pre"][layer], start_layer=layer,
                                     dims=dims, edits=edits)
        assert np.abs(np.asarray(resumed) - np.asarray(full)).max() <= 1e-4
        got, _ = jai.decode(model.params, tokens, resumed, dims=dims)
        assert np.abs(np.asarray(got) - want).max() <= TOL, layer


def test_encode_from_runs_only_the_later_blocks_and_refuses_earlier_edits(setup):
    model, _, _, _, ref, clean, _ = setup
    dims = model.dims
    start = 2
    resid = clean["encoder.resid_pre"][start]
    jaxpr = jax.make_jaxpr(lambda r: jai.encode_from(model.params, r, start_layer=start, dims=dims))(resid)
    inner = jaxpr.jaxpr.eqns[0].params["jaxpr"].jaxpr
    scans = [e.params["length"] for e in inner.eqns if e.primitive.name == "scan"]
    assert scans == [dims.n_audio_layer - start]
    early = {"encoder.mlp_out": jai.zero(layers=[start - 1])}
    with pytest.raises(ValueError, match="before start_layer=2"):
        jai.encode_from(model.params, resid, start_layer=start, dims=dims, edits=early)
    with pytest.raises(ValueError, match="start_layer must be in"):
        jai.encode_from(model.params, resid, start_layer=dims.n_audio_layer, dims=dims)


def test_transcribe_with_edits_is_the_argmax_of_the_edited_teacher_forced_pass(setup):
    model, _, mel, _, ref, _, _ = setup
    tok = model.tokenizer
    audio = jai.sample_path(CLIP)
    plain = jai.transcribe_ids(model, [audio], batch_size=1)[0]
    for edits in ({"encoder.resid_post": jai.interpolate(ref["encoder.resid_post"], 0.8, layers=[2])},
                  # position-independent data (the reference's mean over tokens) fits any length
                  {"decoder.cross_attn.z": jai.interpolate(ref["decoder.cross_attn.z"].mean(1, keepdims=True),
                                                           1.0, heads=[1, 3])}):
        ids = jai.transcribe_ids(model, [audio], batch_size=1, edits=edits)[0]
        assert ids != plain, (list(edits), model.tokenizer.decode(ids))  # the edit acts
        prompt = tok.prompt()
        seq = jnp.asarray(prompt + ids, jnp.int32)
        logits, _ = jai.forward(model.params, mel, seq, dims=model.dims, edits=edits)
        argmax = np.asarray(logits.argmax(-1))[len(prompt) - 1:]
        assert argmax[:-1].tolist() == ids
        assert argmax[-1] == tok.eot or len(ids) == model.dims.n_text_ctx // 2
