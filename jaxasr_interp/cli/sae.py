"""``jaxasr-interp sae train`` and ``jaxasr-interp sae inspect``: sparse autoencoders on Whisper
(:mod:`jaxasr_interp.sae`, docs/sae.md).

``sae train AUDIO... --out DIR`` stores the activations of one site over the audio (files, or
directories searched for audio files) in ``DIR/acts`` (resumable: rerun to continue), trains
one SAE per layer x expansion x k in one vmapped run, saves each to
``DIR/sae_l{layer}_x{expansion}_k{k}`` (orbax, :func:`~jaxasr_interp.sae.save_sae`) and writes
``DIR/saes.json`` (configs, and FVU / L0 / dead fraction on the stored rows: in-sample). Both
steps show progress bars. ``--dtype`` / ``--precision`` (:mod:`.options`) are the model's while
storing activations (the SAEs train in float32); ``--store-dtype float16`` halves the store.

``sae inspect SAE_DIR --latent N[,M...] --out DIR`` writes ``DIR/index.html`` (self-contained:
each latent's top-activating clips with playable snippets, its activation over the top clips
under their mel spectrograms, and for decoder sites the tokens it raises) with the PNGs and
``latents.json`` beside it (:mod:`jaxasr_interp.report.sae_page`). The store is
``SAE_DIR/../acts`` unless ``--store`` says otherwise; the model is the store's unless
``--model`` says otherwise.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

from jaxasr_interp.cli.options import add_model, add_numerics, add_out, numerics

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None


def audio_files(items) -> list[str]:
    """The files given, and the audio files (``AUDIO_SUFFIXES``) under the directories given."""
    out = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
            if not found:
                raise ValueError(f"{path} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
            out += [str(p) for p in found]
        else:
            out.append(str(path))
    return out


def _configs(args, d_in: int, layers) -> list:
    from jaxasr_interp.sae import SAEConfig
    expansions, ks = _ints(args.expansion, "--expansion"), _ints(args.k, "--k")
    if not expansions or min(expansions) < 1 or not ks or min(ks) < 1:
        raise ValueError("--expansion and --k must be positive integers")
    return [SAEConfig(d_in, d_in * e, args.kind, k=k, site=args.site, layer=layer, seed=args.seed)
            for layer, e, k in itertools.product(layers, expansions, ks)]


def _train(args) -> int:
    from jaxasr_interp.sae import ActivationStore, evaluate, save_sae, train_saes, write_activations
    from jaxasr_interp.whisper.api import load
    from jaxasr_interp.whisper.streaming import check_files

    if args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    paths = [str(Path(p).absolute()) for p in audio_files(args.audio)]  # the store names its clips
    check_files(paths)
    out = Path(args.out)
    model = load(args.model, dtype=args.dtype)
    layers = None if args.layers == "all" else _ints(args.layers, "--layers")
    num = numerics(args)
    write_activations(model, paths, out / "acts", sites=(args.site,), layers=layers, keep=args.keep,
                      seed=args.seed, chunk_size=args.chunk_size, dtype=args.store_dtype,
                      compute_dtype=num["dtype"], precision=num["precision"])
    store = ActivationStore(out / "acts")
    d_in = store.shard(0)["acts"].shape[-1]
    configs = _configs(args, d_in, store.layers)
    batch = min(args.batch_size, store.n_rows)
    saes = train_saes(store.batches(batch, seed=args.seed, epochs=None), configs, steps=args.steps,
                      layers=store.layers, progress=True)
    quality = evaluate(saes, store.batches(min(4096, store.n_rows), drop_last=False), layers=store.layers)
    rows = []
    for sae, q in zip(saes, quality):
        c = sae.config
        where = save_sae(out / f"sae_l{c.layer}_x{c.d_sae // c.d_in}_k{c.k}", sae, overwrite=True)
        rows.append(dict(dir=str(where), layer=c.layer, d_sae=c.d_sae, k=c.k, kind=c.kind,
                         fvu=q["fvu"], l0=q["l0"], dead=q["dead"], n_rows=q["n_rows"]))
        print(f"{where}: layer {c.layer}, {c.d_sae} latents, k={c.k}: FVU {q['fvu']:.3f}, "
              f"L0 {q['l0']:.1f}, dead {100 * q['dead']:.1f}% (in-sample, {q['n_rows']} rows)")
    summary = dict(model=model.source, site=args.site, store=str(store.directory), n_clips=len(paths),
                   steps=args.steps, batch_size=batch, saes=rows)
    (out / "saes.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {out / 'saes.json'}", file=sys.stderr)
    return 0


def _inspect(args) -> int:
    from jaxasr_interp.report.sae_page import latent_page
    from jaxasr_interp.sae import ActivationStore, load_sae
    from jaxasr_interp.whisper.api import load

    sae = load_sae(args.sae_dir)
    store = ActivationStore(args.store or Path(args.sae_dir).absolute().parent / "acts")
    if sae.config.layer not in store.layers or (sae.config.site and sae.config.site not in store.sites):
        raise ValueError(f"the store {store.directory} holds {store.sites} layers {store.layers}, not this "
                         f"SAE's {sae.config.site} layer {sae.config.layer}; pass --store")
    latents = _ints(args.latent, "--latent")
    if args.k < 1 or args.snippet_seconds <= 0:
        raise ValueError("--k must be at least 1 and --snippet-seconds positive")
    model = load(args.model or store.meta["model"], dtype=args.dtype)
    page = latent_page(model, store, sae, latents, args.out, k=args.k, snippet_seconds=args.snippet_seconds,
                       traces=args.traces, **numerics(args))
    print(page)
    return 0


def _register_train(sae_sub) -> None:
    p = sae_sub.add_parser("train", help="store a site's activations over audio and train SAEs on them",
                           description="Store the activations of SITE at LAYERS over the audio in OUT/acts "
                                       "(resumable), train one SAE per layer x expansion x k in one vmapped "
                                       "run, save each to OUT/sae_l{layer}_x{expansion}_k{k} and write "
                                       "OUT/saes.json. Progress bars for both steps.")
    p.add_argument("audio", nargs="+", metavar="AUDIO", help="audio files, or directories searched for them")
    add_out(p)
    add_model(p)
    p.add_argument("--site", default="encoder.resid_post", help="a per-position block site")
    p.add_argument("--layers", default="all", help="comma-separated layers of the site, or all")
    p.add_argument("--expansion", default="8", help="comma-separated expansion factors (d_sae / d_in)")
    p.add_argument("--k", default="32", help="comma-separated active latents per row (topk, batchtopk)")
    p.add_argument("--kind", default="topk", choices=("topk", "batchtopk", "relu"), help="SAE kind")
    p.add_argument("--steps", type=int, default=2000, help="training steps")
    p.add_argument("--batch-size", type=int, default=4096, help="activation rows per step")
    p.add_argument("--keep", type=float, default=1.0, help="fraction of each clip's rows stored")
    p.add_argument("--chunk-size", type=int, default=8, help="clips per store shard")
    p.add_argument("--store-dtype", default="float32", choices=("float32", "float16"),
                   help="dtype of the stored activations")
    p.add_argument("--seed", type=int, default=0, help="seed of the row sampling, batches and SAE init")
    add_numerics(p)
    p.set_defaults(run=_train)


def _register_inspect(sae_sub) -> None:
    p = sae_sub.add_parser("inspect", help="an HTML page of SAE latents: top clips, snippets, traces",
                           description="Write OUT/index.html (self-contained, opens offline): for each "
                                       "latent its top-activating clips with playable snippets, its "
                                       "activation over the top clips under their mel spectrograms, and "
                                       "for decoder sites the tokens whose logits it raises; PNGs and "
                                       "latents.json beside it.")
    p.add_argument("sae_dir", metavar="SAE_DIR", help="a saved SAE (written by sae train)")
    p.add_argument("--latent", required=True, help="comma-separated latent indices")
    add_out(p)
    p.add_argument("--store", default=None, help="activation store (default: SAE_DIR/../acts)")
    add_model(p, "model name or path (default: the store's)", default=None)
    p.add_argument("--k", type=int, default=8, help="top-activating clips per latent")
    p.add_argument("--snippet-seconds", type=float, default=1.0, help="snippet length around the frame")
    p.add_argument("--traces", type=int, default=3, help="top clips drawn with the activation over time")
    add_numerics(p)
    p.set_defaults(run=_inspect)


def register(sub) -> None:
    p = sub.add_parser("sae", help="sparse autoencoders: train on a site's activations, inspect latents",
                       description="Sparse autoencoders on Whisper activations (docs/sae.md).")
    sae_sub = p.add_subparsers(dest="sae_command", required=True)
    _register_train(sae_sub)
    _register_inspect(sae_sub)
