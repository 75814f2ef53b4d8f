r"""Check that a Flax Whisper checkpoint directory loads in transformers 4.57.6
and reproduces reference logits.

Runs ONLY in the separate venv described in scripts/flax_fixture/README.md.

    /tmp/venv-tf457/bin/python scripts/flax_fixture/verify_load.py DIR \
        [--inputs IO.npz] [--ref REF.npz] [--tol 1e-4]

DIR holds config.json + flax_model.msgpack (e.g. written by our own converter).
--inputs  npz with input_features [B, n_mels, 2*max_source_positions] and
          decoder_input_ids [B, T] (default: the fixture's io.npz)
--ref     npz with `logits` [B, T, vocab] to compare against, and optionally
          `encoder_last_hidden_state` (compared too when present)
          (default: the --inputs file)

Before running the model it checks the msgpack's tree strictly against what
FlaxWhisperForConditionalGeneration expects for DIR's config: same leaf paths
(transformers itself would silently re-initialise a missing leaf and drop an
unexpected one), same shapes, float32 leaves (--dtype to change). Exit status: 0 if everything
matches and max |logits - ref| <= tol, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from make_fixture import _flatten  # the same folder: this script runs beside it

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_IO = os.path.join(REPO, "tests", "fixtures", "flax_whisper", "io.npz")


def check_tree(ckpt_dir, config, dtype="float32") -> list[str]:
    """Problems with the msgpack's tree versus the model's expected one ([] if none)."""
    from flax.core import unfreeze
    from flax.serialization import msgpack_restore
    from transformers import FlaxWhisperForConditionalGeneration

    with open(os.path.join(ckpt_dir, "flax_model.msgpack"), "rb") as f:
        got = {"/".join(k): np.asarray(v) for k, v in _flatten(msgpack_restore(f.read())).items()}
    model = FlaxWhisperForConditionalGeneration(config, _do_init=False)
    want = {"/".join(k): v for k, v in _flatten(unfreeze(model.params_shape_tree)).items()}
    problems = []
    for p in sorted(set(want) - set(got)):
        problems.append(f"missing leaf {p} {tuple(want[p].shape)}")
    for p in sorted(set(got) - set(want)):
        problems.append(f"unexpected leaf {p} {got[p].shape}")
    bad_dtype = []
    for p in sorted(set(got) & set(want)):
        if tuple(got[p].shape) != tuple(want[p].shape):
            problems.append(f"shape {p}: checkpoint {got[p].shape} vs model {tuple(want[p].shape)}")
        if str(got[p].dtype) != dtype:
            bad_dtype.append(f"{p}: {got[p].dtype}")
    if bad_dtype:
        problems.append(f"dtype: {len(bad_dtype)} leaves are not {dtype}, e.g. {bad_dtype[0]}")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="checkpoint directory (config.json + flax_model.msgpack)")
    ap.add_argument("--inputs", default=DEFAULT_IO, help="npz with input_features, decoder_input_ids")
    ap.add_argument("--ref", default=None, help="npz with reference logits (default: --inputs)")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--dtype", default="float32", help="dtype every msgpack leaf must have (default float32)")
    args = ap.parse_args(argv)

    import transformers
    from transformers import FlaxWhisperForConditionalGeneration, WhisperConfig

    config = WhisperConfig.from_pretrained(args.dir)
    problems = check_tree(args.dir, config, args.dtype)
    for p in problems:
        print("TREE:", p)
    print(f"tree: {'OK' if not problems else f'{len(problems)} problem(s)'}")

    io = np.load(args.inputs)
    ref = np.load(args.ref or args.inputs)
    model = FlaxWhisperForConditionalGeneration.from_pretrained(args.dir)
    out = model(
        input_features=np.asarray(io["input_features"], np.float32),
        decoder_input_ids=np.asarray(io["decoder_input_ids"], np.int32),
    )
    logits = np.asarray(out.logits, np.float32)
    ok = not problems
    if logits.shape != ref["logits"].shape:
        print(f"logits shape {logits.shape} != reference {ref['logits'].shape}")
        return 1
    d = float(np.abs(logits - ref["logits"]).max())
    print(f"transformers {transformers.__version__}: max |logits - ref| = {d:.3e} (tol {args.tol:g})")
    ok &= d <= args.tol
    if "encoder_last_hidden_state" in ref.files:
        e = float(np.abs(np.asarray(out.encoder_last_hidden_state) - ref["encoder_last_hidden_state"]).max())
        print(f"max |encoder_last_hidden_state - ref| = {e:.3e}")
        ok &= e <= args.tol
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
