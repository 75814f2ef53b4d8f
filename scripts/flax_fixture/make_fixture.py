"""Build the tiny transformers-Flax Whisper checkpoint fixture.

Runs ONLY in the separate venv described in scripts/flax_fixture/README.md
(transformers 4.57.6, the last release with FlaxWhisperForConditionalGeneration),
never in the project's own environment.

    /tmp/venv-tf457/bin/python scripts/flax_fixture/make_fixture.py [--out DIR]

Writes into DIR (default tests/fixtures/flax_whisper/):
  config.json, generation_config.json, flax_model.msgpack  (model.save_pretrained)
  io.npz     input_features [1,13,34] f32, decoder_input_ids [1,7] i32,
             logits [1,7,97] f32, encoder_last_hidden_state [1,17,20] f32
  tree.json  every parameter leaf path ("model/encoder/...") with shape and
             dtype, sorted, read back from the msgpack with msgpack_restore

Everything is deterministic: the parameters are re-drawn from
numpy.random.default_rng(PARAM_SEED) (HF's init has std 0.02, zero biases and
unit layer-norm scales, which would make a broken converter look right), and
the inputs from numpy.random.default_rng(0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(REPO, "tests", "fixtures", "flax_whisper")

PARAM_SEED = 1
INPUT_SEED = 0

# Special token ids: all inside the vocab (97), mirroring real Whisper where
# bos = eos = pad and decoder_start is the next id.
BOS = EOS = PAD = 90
DECODER_START = 91

CONFIG_KW = dict(
    vocab_size=97,
    num_mel_bins=13,
    d_model=20,  # 4 heads -> head_dim 5
    encoder_layers=2,
    decoder_layers=3,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=44,  # deliberately not 4 * d_model
    decoder_ffn_dim=52,
    max_source_positions=17,  # mel frames = 2 * 17 = 34
    max_target_positions=11,
    activation_function="gelu",
    scale_embedding=False,
    tie_word_embeddings=True,
    bos_token_id=BOS,
    eos_token_id=EOS,
    pad_token_id=PAD,
    decoder_start_token_id=DECODER_START,
    suppress_tokens=[],
    begin_suppress_tokens=[],
    forced_decoder_ids=None,
    dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
)


def _flatten(tree, prefix=()):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _unflatten(flat):
    tree: dict = {}
    for path, v in flat.items():
        d = tree
        for k in path[:-1]:
            d = d.setdefault(k, {})
        d[path[-1]] = v
    return tree


def redraw_params(params, rng: np.random.Generator):
    """Replace every leaf by a deterministic, non-trivial value of the same shape.

    * Dense/Conv ``kernel``: N(0, 1/fan_in) where fan_in = prod(shape[:-1]).
    * ``bias`` (dense, conv, layer norm): N(0, 0.1^2).
    * layer-norm ``scale``: 1 + N(0, 0.1^2).
    * ``embedding`` (decoder tokens / decoder positions): N(0, 0.5^2).
    * encoder ``embed_positions/embedding``: HF's sinusoidal init PLUS N(0, 0.05^2),
      so a reader that recomputes sinusoids instead of reading the stored table is
      caught.
    Leaves are drawn in sorted path order (reproducible), but the returned tree keeps
    the insertion order of ``params`` (flax's module-creation order), so the
    msgpack's map order is exactly what HF writes for a freshly initialised model.
    """
    flat = _flatten(params)
    drawn = {}
    for path in sorted(flat):
        arr = np.asarray(flat[path])
        name = path[-1]
        shape = arr.shape
        if name == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            v = rng.standard_normal(shape) / np.sqrt(fan_in)
        elif name == "bias":
            v = 0.1 * rng.standard_normal(shape)
        elif name == "scale":
            v = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name == "embedding" and path[-3:-1] == ("encoder", "embed_positions"):
            v = arr.astype(np.float64) + 0.05 * rng.standard_normal(shape)
        elif name == "embedding":
            v = 0.5 * rng.standard_normal(shape)
        else:
            raise ValueError(f"unexpected leaf {'/'.join(path)}")
        drawn[path] = np.asarray(v, dtype=np.float32)
    return _unflatten({path: drawn[path] for path in flat})


def make_inputs(config):
    rng = np.random.default_rng(INPUT_SEED)
    frames = 2 * config.max_source_positions
    mel = rng.standard_normal((1, config.num_mel_bins, frames)).astype(np.float32)
    toks = rng.integers(0, BOS, size=(1, 6))
    dec = np.concatenate([[[DECODER_START]], toks], axis=1).astype(np.int32)
    return mel, dec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    import flax
    import jax
    import transformers
    from flax.serialization import msgpack_restore
    from transformers import FlaxWhisperForConditionalGeneration, WhisperConfig

    print(f"transformers {transformers.__version__}  flax {flax.__version__}  jax {jax.__version__}  numpy {np.__version__}")

    config = WhisperConfig(**CONFIG_KW)
    model = FlaxWhisperForConditionalGeneration(config, seed=0)
    model.params = redraw_params(model.params, np.random.default_rng(PARAM_SEED))

    mel, dec = make_inputs(config)
    out = model(input_features=mel, decoder_input_ids=dec)
    logits = np.asarray(out.logits, dtype=np.float32)
    enc = np.asarray(out.encoder_last_hidden_state, dtype=np.float32)
    assert logits.shape == (1, dec.shape[1], config.vocab_size), logits.shape
    assert enc.shape == (1, config.max_source_positions, config.d_model), enc.shape
    assert np.all(np.isfinite(logits)) and np.all(np.isfinite(enc))
    print(f"logits std {logits.std():.4f}  max|.| {np.abs(logits).max():.4f};  encoder std {enc.std():.4f}")

    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out)
    np.savez(
        os.path.join(args.out, "io.npz"),
        input_features=mel,
        decoder_input_ids=dec,
        logits=logits,
        encoder_last_hidden_state=enc,
    )

    # Read the msgpack back exactly as a consumer would and record its tree.
    with open(os.path.join(args.out, "flax_model.msgpack"), "rb") as f:
        restored = msgpack_restore(f.read())
    flat = _flatten(restored)
    tree = [
        {"path": "/".join(p), "shape": list(np.asarray(v).shape), "dtype": str(np.asarray(v).dtype)}
        for p, v in sorted(flat.items(), key=lambda kv: "/".join(kv[0]))
    ]
    header = {
        "producer": f"transformers {transformers.__version__}, flax {flax.__version__}, jax {jax.__version__}",
        "n_leaves": len(tree),
        "n_params": int(sum(int(np.prod(t["shape"])) for t in tree)),
    }
    # One leaf per line: easy to diff and to read; still plain JSON.
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in header.items()] + [' "leaves": [']
    lines += [f"  {json.dumps(t)}," for t in tree]
    lines[-1] = lines[-1].rstrip(",")
    lines += [" ]", "}"]
    with open(os.path.join(args.out, "tree.json"), "w") as f:
        f.write("\n".join(lines) + "\n")
    assert json.load(open(os.path.join(args.out, "tree.json")))["leaves"] == tree

    # Sanity: config round-trips and the saved checkpoint reloads to identical logits.
    cfg2 = WhisperConfig.from_pretrained(args.out)
    for k, v in CONFIG_KW.items():
        assert getattr(cfg2, k) == v, (k, getattr(cfg2, k), v)
    m2 = FlaxWhisperForConditionalGeneration.from_pretrained(args.out)
    l2 = np.asarray(m2(input_features=mel, decoder_input_ids=dec).logits)
    diff = float(np.abs(l2 - logits).max())
    assert diff == 0.0, diff
    for p, v in flat.items():
        ref = np.asarray(_flatten(model.params)[p])
        assert np.array_equal(ref, v), p

    total = sum(os.path.getsize(os.path.join(args.out, n)) for n in os.listdir(args.out))
    print(f"wrote {sorted(os.listdir(args.out))} to {args.out} ({total} bytes); reload diff {diff}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
