"""The restrict edit (a masked softmax, as data) and the attention-window experiment end to end."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxasr_interp as jai
from jaxasr_interp.core import edits as E
from jaxasr_interp.experiments import attention_window as aw
from jaxasr_interp.whisper.api import Model, default_tokenizer_file
from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.whisper.decoding import greedy_decode, logit_bias
from jaxasr_interp.whisper.model import encode, forward
from jaxasr_interp.whisper.tokenizer import WhisperTokenizer
from jaxasr_interp.weights.layout import param_shapes
from helpers.sweep_child import DIMS, random_params

SITE = "encoder.attn.pattern"


def masked_softmax(scores, keep):
    return jax.nn.softmax(jnp.where(keep > 0, scores, -jnp.inf), axis=-1)


def test_restrict_is_a_masked_softmax_with_the_usual_selection():
    rng = np.random.default_rng(0)
    scores = jnp.asarray(rng.normal(size=(3, 5, 7, 7)) * 3, jnp.float32)  # [L, H, S, S]
    keep = jnp.asarray(rng.random((7, 7)) < 0.5, jnp.float32).at[:, 0].set(1.0)
    pattern = jax.nn.softmax(scores, -1)
    edit = E.resolve(E.restrict(keep, 0.5, layers=[1], heads=[0, 3]), SITE, (5, 7, 7), 3)
    out = jnp.stack([E.Edit(edit.kind, edit.data[l], edit.alpha[l]).apply(pattern[l]) for l in range(3)])
    want = pattern.at[1, jnp.array([0, 3])].set(0.5 * pattern[1, jnp.array([0, 3])]
                                                + 0.5 * masked_softmax(scores, keep)[1, jnp.array([0, 3])])
    np.testing.assert_allclose(np.asarray(out), np.asarray(want), atol=1e-6, rtol=0)
    untouched = np.ones(out.shape, bool)
    untouched[1, [0, 3]] = False
    assert np.array_equal(np.asarray(out)[untouched], np.asarray(pattern)[untouched])


def test_restrict_rows_keeping_all_or_nothing_are_untouched_and_a_bad_keep_is_refused():
    pattern = jax.nn.softmax(jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 4)), jnp.float32), -1)
    keep = jnp.asarray([[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 1, 0]], jnp.float32)
    out = E.Edit("restrict", keep[None], jnp.ones((1, 1, 1))).apply(pattern)
    assert np.array_equal(np.asarray(out[:, :2]), np.asarray(pattern[:, :2]))
    np.testing.assert_allclose(np.asarray(out[:, 2]), [[1, 0, 0, 0]] * 2, atol=0)
    np.testing.assert_allclose(np.asarray(out.sum(-1)), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="no key axis"):
        E.resolve(E.restrict(keep), "encoder.attn.z", (4, 2, 3), 3)
    with pytest.raises(ValueError, match="last axis must be the 4 keys"):
        E.resolve(E.restrict(jnp.ones((4, 3))), SITE, (2, 4, 4), 3)


@pytest.fixture(scope="module")
def small():
    params = random_params(seed=2)
    mel = jnp.asarray(np.random.default_rng(3).standard_normal((DIMS.n_mels, DIMS.n_samples_frames)), jnp.float32)
    return params, mel


def test_restrict_in_the_encoder_equals_a_masked_softmax_of_its_own_scores(small):
    params, mel = small
    keep = aw.band(DIMS.n_audio_ctx, 3)
    _, clean = encode(params, mel, dims=DIMS, capture=[SITE])
    _, acts = encode(params, mel, dims=DIMS, edits={SITE: jai.restrict(keep, layers=[1])},
                     capture=["encoder.attn.q", "encoder.attn.k", SITE])
    q, k = acts["encoder.attn.q"][1], acts["encoder.attn.k"][1]  # upstream of the edit in layer 1
    scores = jnp.einsum("qhd,khd->hqk", q * q.shape[-1] ** -0.5, k)
    np.testing.assert_allclose(np.asarray(acts[SITE][1]), np.asarray(masked_softmax(scores, keep)), atol=1e-6)
    assert np.array_equal(np.asarray(acts[SITE][0]), np.asarray(clean[SITE][0]))
    assert not np.allclose(np.asarray(acts[SITE][2]), np.asarray(clean[SITE][2]), atol=1e-3)


def test_keeping_every_key_is_bit_identical_to_no_edit(small):
    params, mel = small
    tokens = jnp.arange(7, dtype=jnp.int32)
    clean, _ = forward(params, mel, tokens, dims=DIMS)
    every = aw.band(DIMS.n_audio_ctx, DIMS.n_audio_ctx)
    for edits in ({SITE: jai.restrict(every)},
                  {SITE: jai.restrict(aw.band(DIMS.n_audio_ctx, 2), alpha=0.0)},
                  {"decoder.cross_attn.pattern": jai.restrict(jnp.ones(DIMS.n_audio_ctx), alpha=0.7)}):
        logits, _ = forward(params, mel, tokens, dims=DIMS, edits=edits)
        assert np.array_equal(np.asarray(logits), np.asarray(clean))


def test_restricted_cross_attention_decodes_as_it_teacher_forces(small):
    params, mel = small
    keep = (jnp.arange(DIMS.n_audio_ctx) < 9).astype(jnp.float32)
    edits = {"decoder.cross_attn.pattern": jai.restrict(keep, heads=[1, 4])}
    features, _ = encode(params, mel, dims=DIMS)
    prompt, none = jnp.asarray([3, 5], jnp.int32), logit_bias(DIMS.n_vocab, ())
    ids = greedy_decode(params, features[None], prompt, 0, none, none, dims=DIMS, max_new_tokens=6, edits=edits)[0]
    logits, _ = forward(params, mel, jnp.concatenate([prompt, ids]), dims=DIMS, edits=edits)
    ids = np.asarray(ids)
    stop = int(np.argmax(ids == 0)) + 1 if (ids == 0).any() else ids.size  # up to end-of-text (0)
    assert np.array_equal(np.asarray(jnp.argmax(logits[1:-1], -1))[:stop], ids[:stop])
    plain, _ = forward(params, mel, jnp.concatenate([prompt, ids]), dims=DIMS)
    assert np.abs(np.asarray(plain - logits)).max() > 1e-3  # and the edit did act


def test_band_and_its_control_keep_as_many_keys():
    b, r = aw.band(200, 10), aw.random_keys(200, 10, seed=1)
    assert np.array_equal(b.sum(1), r.sum(1)) and b.sum(1).max() == 21 and b.sum(1).min() == 11
    assert (b * r).sum() / b.sum() < 0.25  # the control is not local
    assert np.array_equal(r, aw.random_keys(200, 10, seed=1))
    cells = aw.conditions(3, ks=(10, None))
    assert [(c["layers"], c["mask"]) for c in cells] == [("all", "band"), ("all", "random"), (0, "band"),
                                                         (1, "band"), (2, "band")]


E2E_DIMS = Dims(n_mels=80, n_audio_ctx=1500, n_audio_state=12, n_audio_head=2, n_audio_layer=2,
                n_vocab=51864, n_text_ctx=8, n_text_state=12, n_text_head=2, n_text_layer=2)


def random_model(seed=0) -> Model:
    """A random English-only model of real context sizes and tiny widths (real tokenizer)."""
    rng = np.random.default_rng(seed)
    is_shape = lambda x: isinstance(x, tuple) and all(isinstance(n, int) for n in x)
    params = jax.tree_util.tree_map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s), jnp.float32),
                                    param_shapes(E2E_DIMS), is_leaf=is_shape)
    tok = WhisperTokenizer.from_file(default_tokenizer_file(E2E_DIMS), multilingual=False)
    return Model(params, E2E_DIMS, tok, "random")


def test_run_writes_the_documented_schema_and_is_bit_identical_on_rerun(tmp_path):
    model, clips = random_model(), aw.speech_clips()[1:3]
    first = aw.run(model, clips, ks=(20, None), max_new_tokens=4, n_boot=50, out=tmp_path / "a", progress=False)
    aw.run(model, clips, ks=(20, None), max_new_tokens=4, n_boot=50, out=tmp_path / "b", progress=False)
    a, b = (tmp_path / d / "attention_window_random.json" for d in "ab")
    assert a.read_bytes() == b.read_bytes()
    saved = json.loads(a.read_text())
    assert saved == json.loads(json.dumps(first))
    assert saved["n"] == 2 and saved["config"]["ks"] == [20] and saved["config"]["frame_ms"] == 20
    assert {"wer", "mean_wer"} <= set(saved["clean"])
    assert [(c["k"], c["layers"], c["mask"]) for c in saved["cells"]] == [
        (20, "all", "band"), (20, "all", "random"), (20, 0, "band"), (20, 1, "band")]
    for cell in saved["cells"]:
        assert set(cell["wer"]) == {"value", "lo", "hi", "n"} and cell["wer"]["n"] == 2
        assert cell["wer"]["lo"] <= cell["wer"]["value"] <= cell["wer"]["hi"]
        assert {"delta_wer", "mean_wer", "texts", "errors", "ms"} <= set(cell)
    assert "| 20 | ±0.4 s |" in aw.markdown(saved)
