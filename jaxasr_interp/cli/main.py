"""The ``jaxasr-interp`` command line.

Every command prints a clear one-line ``error: ...`` and exits with status 2 on bad input
(a missing or non-audio file, an unknown model, a corrupt checkpoint, an unwritable ``--out``),
never a traceback; a bad argument is one ``error: ...`` line (argparse's usage is left to
``--help``) and status 2 too. Every ``--help`` page shows each option's default;
``--version`` prints the package version. Library banners are kept off the terminal. Every
command that runs the model takes ``--dtype`` and ``--precision`` (:mod:`.options`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from jaxasr_interp.cli.options import add_model, add_numerics

# Bad input surfaces as one of these (file errors are OSErrors; an unknown site is a KeyError).
USER_ERRORS = (ValueError, KeyError, OSError)


OUTPUT_FORMATS = ("txt", "json")


def _output_paths(audio: list, output_dir, fmt: str) -> list[Path]:
    """``DIR/<audio stem>.<fmt>`` for each input, as openai-whisper names them; the directory is
    created now, before any slow work. Two inputs with one stem would overwrite each other."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--output-dir {out} exists and is not a directory")
    paths, seen = [out / f"{Path(a).stem}.{fmt}" for a in audio], {}
    for a, path in zip(audio, paths):
        if path in seen:
            raise ValueError(f"{seen[path]} and {a} would both be written to {path}; "
                             "rename one or transcribe them in separate runs")
        seen[path] = a
    out.mkdir(parents=True, exist_ok=True)
    return paths


def _write_outputs(paths: list[Path], audio: list, texts: list, fmt: str) -> None:
    for path, a, text in zip(paths, audio, texts):
        body = (text.strip() if fmt == "txt" else
                json.dumps({"audio": a, "text": text.strip()}, indent=2, ensure_ascii=False))
        path.write_text(body + "\n", encoding="utf-8")
    print(f"wrote {len(paths)} {fmt} file(s) to {paths[0].parent}", file=sys.stderr)


def _transcribe(args) -> int:
    from jaxasr_interp.cli.options import numerics
    from jaxasr_interp.whisper.api import load, transcribe
    from jaxasr_interp.whisper.audio import sample_path, sample_transcripts
    from jaxasr_interp.whisper.streaming import check_files

    audio = args.audio
    references = {}
    if not audio:
        references = sample_transcripts()
        audio = [str(sample_path(name)) for name in references]
        print(f"no AUDIO given: transcribing the {len(audio)} bundled public-domain samples",
              file=sys.stderr)
    check_files(audio)
    outputs = _output_paths(audio, args.output_dir, args.output_format) if args.output_dir else None
    model = load(args.model, dtype=args.dtype)
    texts = transcribe(model, audio, batch_size=args.batch_size, suppress=args.suppress,
                       language=args.language, max_new_tokens=args.max_new_tokens,
                       progress=not args.json, **numerics(args))
    if args.json:
        print(json.dumps([{"audio": a, "text": t.strip()} for a, t in zip(audio, texts)], indent=2))
    else:
        for path, text in zip(audio, texts):
            ref = references.get(Path(path).name)
            print(f"{path}\t{text.strip()}" + (f"\n  reference:\t{ref}" if ref else ""))
    if outputs:
        _write_outputs(outputs, audio, texts, args.output_format)
    return 0


CONVERT_FORMATS = ("orbax", "hf", "flax")


def _convert(args) -> int:
    from jaxasr_interp.weights import load_weights
    from jaxasr_interp.weights.flax_msgpack import save_flax_dir
    from jaxasr_interp.weights.hf import save_hf_dir
    from jaxasr_interp.weights.orbax_io import save_params

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise FileExistsError(f"{out} exists and is not an empty directory; pass --overwrite to replace it")
    loaded = load_weights(args.src)
    if args.format == "orbax":
        save_params(loaded.params, loaded.dims, out, tokenizer_file=loaded.tokenizer_file,
                    overwrite=args.overwrite)
    else:
        save = save_hf_dir if args.format == "hf" else save_flax_dir
        save(loaded.params, loaded.dims, out)
        if loaded.tokenizer_file and Path(loaded.tokenizer_file).resolve() != (out / "tokenizer.json").resolve():
            (out / "tokenizer.json").write_bytes(Path(loaded.tokenizer_file).read_bytes())
    print(f"wrote {args.format} checkpoint of {args.src} ({loaded.dims}) to {out}")
    return 0


class _HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: ...)`` to the help of every option that takes a value and has a
    default (not to flags, nor where the default is None: their help says what None means)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("%(default)" in text or action.default is None or action.default is argparse.SUPPRESS
                or action.nargs == 0):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text + " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and whose help shows defaults (subparsers
    inherit the class)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def check_writable(path) -> None:
    """Refuse an output path that cannot be written, before any (slow) work is done.

    The path, or its nearest existing ancestor, must be a directory in which a file can be
    created (probed for real: permission bits say nothing to root or on read-only mounts)."""
    target = Path(path).absolute()
    while not target.exists():
        target = target.parent
    if not target.is_dir():
        if target == Path(path).absolute():
            target = target.parent  # an existing file: the command decides what to do with it
        else:
            raise NotADirectoryError(f"cannot write to {path}: {target} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as e:
        raise PermissionError(f"cannot write to {path}: {target} is not writable "
                              f"({e.strerror or type(e).__name__})") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxasr-interp", description=(
        "Mechanistic interpretability of Whisper in JAX. Models: tiny.en and base are bundled; "
        "any local checkpoint (transformers dir, model.bin, OpenAI .pt, orbax dir) or cached hub id works."))
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}",
                        help="print the package version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    _register_transcribe(sub)
    _register_convert(sub)
    # Analysis commands live in jaxasr_interp/cli/, one module per concern, each with a
    # ``register(sub)``; experiments (``jaxasr-interp experiment NAME``) are gathered from the
    # modules' ``register_experiments(exp_sub)``.
    experiment = sub.add_parser("experiment", help="run one of the paper's experiments end to end")
    exp_sub = experiment.add_subparsers(dest="experiment", required=True)
    for module in _command_modules():
        if hasattr(module, "register"):
            module.register(sub)
        if hasattr(module, "register_experiments"):
            module.register_experiments(exp_sub)
    return parser


def _register_transcribe(sub) -> None:
    p = sub.add_parser("transcribe", help="greedy transcription of audio files",
                       description="Greedy transcription (plain argmax unless --suppress). "
                                   "With no AUDIO, transcribes the bundled public-domain samples. "
                                   "--output-dir also writes one file per input, DIR/<audio stem>.txt "
                                   "or .json, as openai-whisper does.")
    p.add_argument("audio", nargs="*", metavar="AUDIO", help="audio files (wav, flac, ogg...)")
    add_model(p)
    p.add_argument("--batch-size", type=int, default=8, help="utterances per compiled batch")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of text lines")
    p.add_argument("--suppress", action="store_true",
                   help="apply Whisper's usual token suppression (blank at start, non-speech symbols)")
    p.add_argument("--language", default="en", help="language code for multilingual models")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="decoding length limit (default: half the text context, 224 tokens)")
    p.add_argument("--output-dir", default=None, metavar="DIR",
                   help="also write DIR/<audio stem>.<format> per input (created if missing; "
                        "default: no files)")
    p.add_argument("--output-format", choices=OUTPUT_FORMATS, default="txt",
                   help="with --output-dir: txt (the transcript and a newline) or json "
                        '({"audio": path, "text": transcript})')
    add_numerics(p)
    p.set_defaults(run=_transcribe)


def _register_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert a checkpoint to orbax (default), transformers or Flax format",
                       description="Load any supported checkpoint and save it as an orbax directory "
                                   "(fast to reload), a transformers safetensors directory (hf), or a "
                                   "transformers Flax directory (flax: config.json + flax_model.msgpack, "
                                   "as on the hub and in whisper-jax). tokenizer.json is copied along.")
    p.add_argument("src", help="model name or path to convert")
    p.add_argument("out", help="output directory")
    p.add_argument("--format", choices=CONVERT_FORMATS, default="orbax",
                   help="orbax, hf (model.safetensors) or flax (flax_model.msgpack)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(run=_convert)


COMMAND_MODULES = ("lens", "probe", "patch", "report", "sae", "beyond")


def _command_modules():
    import importlib
    for name in COMMAND_MODULES:
        yield importlib.import_module(f"jaxasr_interp.cli.{name}")


def package_version() -> str:
    """The installed distribution's version, else (an uninstalled checkout) pyproject.toml's."""
    from importlib import metadata
    try:
        return metadata.version("jaxasr-interp")
    except metadata.PackageNotFoundError:
        pass
    try:
        text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    section = None
    for line in map(str.strip, text.splitlines()):
        if line.startswith("["):
            section = line
        elif section == "[project]" and (match := re.match(r'version\s*=\s*"([^"]+)"', line)):
            return match.group(1)
    return "unknown"


def quiet_libraries() -> None:
    """Keep library banners off the terminal. transformers (imported for Whisper's text
    normaliser and checkpoint conversion) logs "PyTorch was not found..." at import when torch is
    absent, which the CLI never needs. Takes effect if run before transformers is imported; an
    explicit TRANSFORMERS_VERBOSITY in the environment wins."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    args = build_parser().parse_args(argv)
    from jaxasr_interp.core.compile_cache import enable_compilation_cache
    enable_compilation_cache()  # compile once per machine (JAXASR_INTERP_CACHE=off: not at all)
    if getattr(args, "batch_size", 1) < 1:
        print("error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        for name in ("out", "output_dir"):
            if getattr(args, name, None) is not None:
                check_writable(getattr(args, name))
        return args.run(args)
    except USER_ERRORS as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
