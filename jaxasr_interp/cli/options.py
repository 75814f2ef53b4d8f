"""Options shared by the commands: ``--model`` and ``--out`` (:func:`add_model`,
:func:`add_out`), ``--reference`` (:func:`add_reference`), comma-separated numbers
(:func:`floats`), and ``--dtype`` and ``--precision``, taken by every command that runs the model.

``--dtype bfloat16`` loads the parameters in bfloat16 (half the memory; no float32 copy is
kept) and runs the matmuls in bfloat16; LayerNorm and softmax stay float32. ``--precision``
is the matmul precision on GPU/TPU (CPU matmuls are float32-exact at every setting). The
semantics are those of :mod:`jaxasr_interp.core.dtypes`.
"""

from __future__ import annotations

from jaxasr_interp.core.dtypes import DTYPES, PRECISIONS

DEFAULT_DTYPE, DEFAULT_PRECISION = "float32", "highest"
DEFAULT_MODEL = "tiny.en"


def add_model(p, help: str = "model name or path", default: str | None = DEFAULT_MODEL) -> None:
    """Add ``--model`` (a model name or checkpoint path) to a command's parser."""
    p.add_argument("--model", default=default, help=help)


def add_out(p, help: str = "output directory", default: str | None = None) -> None:
    """Add ``--out``: required unless a default is given."""
    p.add_argument("--out", required=default is None, default=default, help=help)


def add_reference(p) -> None:
    """Add ``--reference``, the audio patched towards (default: seeded white noise)."""
    p.add_argument("--reference", default=None, help="reference audio (default: seeded white noise)")


def floats(text: str) -> tuple:
    """``"0.5,1"`` -> ``(0.5, 1.0)``; anything else is a ValueError naming the text."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got {text!r}") from None


def add_numerics(p) -> None:
    """Add ``--dtype`` and ``--precision`` to a command's parser."""
    p.add_argument("--dtype", choices=tuple(DTYPES), default=DEFAULT_DTYPE,
                   help="compute dtype; bfloat16 also stores the parameters in bfloat16 (half the memory)")
    p.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                   help="matmul precision on GPU/TPU: highest is float32-exact, high and default are "
                        "faster (TF32/bf16 passes); CPU is exact at every setting")


def numerics(args) -> dict:
    """``{"dtype": ..., "precision": ...}`` of a command's arguments, the dtype as a JAX dtype:
    the keywords every library function it calls takes."""
    return {"dtype": DTYPES[args.dtype], "precision": args.precision}
