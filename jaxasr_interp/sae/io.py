"""Save and load SAEs with orbax: a directory per SAE.

    DIR/config.json    the SAEConfig, the input scale it trained at, the training history
    DIR/params/        the params pytree (orbax StandardCheckpointer, float32)

``save_sae(dir, sae)`` / ``load_sae(dir) -> TrainedSAE`` round-trip exactly (the arrays are
written and read back bit for bit). For other tools, :mod:`.saelens` writes the SAELens format.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

from jaxasr_interp.sae.model import SAEConfig
from jaxasr_interp.sae.train import TrainedSAE

FORMAT = "jaxasr-interp sae v1"


def save_sae(directory, sae: TrainedSAE, *, overwrite: bool = False) -> Path:
    """Write one trained SAE (module docstring)."""
    import orbax.checkpoint as ocp
    directory = Path(directory).expanduser().absolute()
    params = {k: np.asarray(v, np.float32) for k, v in sae.params.items()}
    directory.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / "params", params, force=overwrite)
        ckptr.wait_until_finished()
    meta = dict(format=FORMAT, config=dataclasses.asdict(sae.config), scale=float(sae.scale),
                shapes={k: list(v.shape) for k, v in params.items()},
                history={k: np.asarray(v).tolist() for k, v in sae.history.items()})
    (directory / "config.json").write_text(json.dumps(meta, indent=1) + "\n")
    return directory


def load_sae(directory) -> TrainedSAE:
    """A :class:`~.train.TrainedSAE` written by :func:`save_sae`."""
    import orbax.checkpoint as ocp
    directory = Path(directory).expanduser().absolute()
    path = directory / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: not a saved SAE (no config.json)")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{directory}: not a jaxasr-interp SAE (format {meta.get('format')!r})")
    target = {k: jax.ShapeDtypeStruct(tuple(s), np.float32) for k, s in meta["shapes"].items()}
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore(directory / "params", target)
    params = {k: np.asarray(v) for k, v in params.items()}
    history = {k: np.asarray(v) for k, v in meta["history"].items()}
    return TrainedSAE(SAEConfig(**meta["config"]), params, meta["scale"], history)
