"""``jaxasr-interp report [AUDIO] --out DIR``: the one-page HTML report of one utterance.

Writes ``DIR/index.html`` (self-contained: figures inlined, no script, no external resource),
the figures as PNGs beside it and ``report.json`` (see :mod:`jaxasr_interp.report`). With no
AUDIO it reports on the bundled public-domain JFK clip, scored against its known transcript.
The audio is read and checked before the model loads, so bad input fails at once. Takes
``--dtype`` and ``--precision`` (:mod:`.options`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from jaxasr_interp.cli.options import add_model, add_numerics, add_out, numerics

DEFAULT_SAMPLE = "jfk.wav"


def _report(args) -> int:
    from jaxasr_interp.whisper.api import load
    from jaxasr_interp.whisper.audio import load_audio, sample_path, sample_transcripts
    from jaxasr_interp.report.page import report

    audio, reference = args.audio, args.ref_text
    if audio is None:
        audio = str(sample_path(DEFAULT_SAMPLE))
        reference = reference if reference is not None else sample_transcripts()[DEFAULT_SAMPLE]
        print(f"no AUDIO given: reporting on the bundled public-domain clip {DEFAULT_SAMPLE}",
              file=sys.stderr)
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be between 0 and 1, got {args.alpha}")
    wave = load_audio(audio)  # bad audio is an error before the (slow) model load
    model = load(args.model, dtype=args.dtype)
    page = report(model, wave, args.out, reference=reference, name=Path(audio).name,
                  alpha=args.alpha, seed=args.seed, max_new_tokens=args.max_new_tokens, **numerics(args))
    print(page)
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page: transcript, mel, lenses, "
                                      "alignment, patching",
                       description="Write DIR/index.html (figures inlined; opens offline) with the "
                                   "transcript, mel spectrogram, logit lens, encoder lens, "
                                   "cross-attention alignment and a head-patching overview, plus "
                                   "the PNGs and report.json beside it. No AUDIO: the bundled JFK clip.")
    p.add_argument("audio", nargs="?", default=None, metavar="AUDIO",
                   help="one audio file (default: the bundled jfk.wav)")
    add_out(p)
    add_model(p)
    p.add_argument("--ref-text", default=None, metavar="TEXT",
                   help="the text spoken, for WERs (default: none; the bundled clip's own)")
    p.add_argument("--alpha", type=float, default=1.0, help="strength of each head patch (0..1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the white-noise reference run")
    p.add_argument("--max-new-tokens", type=int, default=None, help="decoding length limit")
    add_numerics(p)
    p.set_defaults(run=_report)
