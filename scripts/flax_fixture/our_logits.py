r"""Our own logits for verify_load.py: runs in the PROJECT's environment (jaxasr_interp), not in
the transformers-4.57.6 venv.

    python scripts/flax_fixture/our_logits.py MODEL --out REF.npz [--inputs IO.npz]
    python scripts/flax_fixture/our_logits.py MODEL --out REF.npz --clip jfk.wav --inputs-out IO.npz

MODEL is anything ``jaxasr_interp.load_weights`` reads (a directory our converter wrote, a
bundled name ...). With --inputs (default: the fixture's io.npz) the model runs on its
input_features / decoder_input_ids; with --clip it runs on a bundled clip's log-mel and the
tokenizer's prompt + the clip's reference transcript, and writes those inputs to --inputs-out.
REF.npz gets ``logits`` [B, T, V] and ``encoder_last_hidden_state`` [B, S, D] (B = 1).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_IO = os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "fixtures", "flax_whisper", "io.npz")


def clip_inputs(model_src: str, clip: str):
    import jaxasr_interp as jai
    from jaxasr_interp.whisper.audio import sample_path, sample_transcripts
    model = jai.load(model_src)
    mel = jai.log_mel(jai.load_audio(sample_path(clip)), n_mels=model.dims.n_mels)
    text = sample_transcripts()[clip].strip()
    tokens = list(model.tokenizer.prompt(language="en")) + model.tokenizer.encode(" " + text)
    return np.asarray(mel, np.float32)[None], np.asarray(tokens, np.int32)[None]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--out", required=True, help="npz to write our logits to")
    ap.add_argument("--inputs", default=DEFAULT_IO, help="npz with input_features, decoder_input_ids")
    ap.add_argument("--clip", help="a bundled clip (e.g. jfk.wav) instead of --inputs")
    ap.add_argument("--inputs-out", help="with --clip: where to write the inputs for verify_load.py")
    args = ap.parse_args(argv)

    import jax.numpy as jnp
    import jaxasr_interp as jai
    if args.clip:
        if not args.inputs_out:
            ap.error("--clip needs --inputs-out")
        mel, tokens = clip_inputs(args.model, args.clip)
        np.savez(args.inputs_out, input_features=mel, decoder_input_ids=tokens)
    else:
        io = np.load(args.inputs)
        mel, tokens = io["input_features"], io["decoder_input_ids"]
    loaded = jai.load_weights(args.model)
    logits, _ = jai.forward(loaded.params, jnp.asarray(mel[0]), jnp.asarray(tokens[0]), dims=loaded.dims)
    features, _ = jai.encode(loaded.params, jnp.asarray(mel[0]), dims=loaded.dims)
    np.savez(args.out, logits=np.asarray(logits, np.float32)[None],
             encoder_last_hidden_state=np.asarray(features, np.float32)[None])
    print(f"{args.model}: logits {tuple(logits.shape)} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
