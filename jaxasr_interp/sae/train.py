"""Train many SAEs at once: one jitted step over the same activation batch, ``jax.vmap``-ed over
the SAEs that share a shape.

``train_saes(batches, configs, steps=...)`` takes batches ``[L, B, d_in]`` (the layers of an
:class:`~.store.ActivationStore`, ``layers`` naming them) and :class:`~.model.SAEConfig` s
(each reads ``config.layer``). SAEs are **grouped by (kind, d_sae, d_in)** and each group is
one ``vmap``; every group is traced into the same jitted step, so a step is one dispatch over
one batch whatever the mix of widths. Within a group, layer, ``k``, ``l1``, AuxK and learning
rate are data (``k`` through a top-k at the group's largest ``k``, masked by rank), so several
layers and k's share one program. Widths are grouped rather than padded to the widest:
padding a 4x SAE to 8x would double its matrix products, and its padded latents would have to
be masked out of the top-k, the dead-latent counts and the AuxK loss, for nothing a group costs
(one more ``vmap`` in the same trace).

Each step (per SAE, as Gao et al. 2024 / SAELens):

* the input is scaled by a per-SAE constant, ``sqrt(d_in) / mean ||x||`` over the first batch,
  so one learning rate fits every layer; the scale is folded back at the end
  (:func:`.model.fold_scale`), so returned params work on raw activations;
* ``b_dec`` starts at the geometric median of the first batch (``init="mean"``: its mean);
* loss = normalised MSE + ``l1 * sum(z)`` (relu) + ``aux_coeff * AuxK`` (topk, batchtopk),
  AuxK on the latents that have not fired for ``dead_after`` rows; steps with no dead latent
  in the whole group skip it (a ``lax.cond`` around the group's ``vmap``);
* the decoder gradient's component along each row is projected out, Adam (optax
  ``scale_by_adam``) with linear warm-up over the first ``warmup`` and decay over the last
  ``decay`` fraction of steps, then decoder rows renormalised to 1;
* BatchTopK's inference threshold is a running average (rate 0.01) of the smallest kept
  activation, from the first batch's value.

A group's programs are those of each SAE alone, ``vmap``-ed: training several at once equals
training each alone to float tolerance (tests/test_sae_train.py).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxasr_interp.sae import model as M

ADAM = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)
THRESHOLD_RATE = 0.01
METRICS = ("nmse", "l0", "aux", "dead")


@dataclasses.dataclass(frozen=True)
class TrainedSAE:
    """A trained SAE: ``params`` (numpy, raw activation units), its ``config``, the input
    ``scale`` it trained at, and ``history`` (``{"step", "nmse", "l0", "aux", "dead"}`` arrays,
    one entry per log)."""

    config: M.SAEConfig
    params: dict
    scale: float
    history: dict


def _loss(params, x, hp, since, *, kind, k_max, k_aux_max, dead_after, with_aux):
    """One SAE's training loss on a batch and what the step needs besides its gradient. AuxK
    shares the pre-activations (and so their backward product) with the main loss."""
    pre = M.pre_acts_train(params, x)
    d_sae, kth = pre.shape[-1], jnp.float32(0)
    if kind == "topk":
        x_part, vals, idx = M.topk_decode(pre, params["W_dec"], hp["k"], k_max)
        x_hat = x_part + params["b_dec"]
        on = vals > 0
        fired = jnp.zeros((d_sae,), jnp.int32).at[idx.reshape(-1)].add(on.reshape(-1)) > 0
        l0, l1 = on.sum(-1).mean(), 0.0
    else:
        if kind == "batchtopk":
            z, kth = M.batchtopk_latents(pre, hp["k"], k_max)
        else:
            z = jax.nn.relu(pre)
        x_hat = M.decode(params, z)
        fired, l0, l1 = (z > 0).any(0), (z > 0).sum(-1).mean(), z.sum(-1).mean()
    loss = mse = M.nmse(x, x_hat)
    if kind == "relu":
        loss = loss + hp["l1"] * l1
    aux = jnp.float32(0)
    if with_aux:
        aux = M.aux_loss(params, pre, x - x_hat, since >= dead_after, hp["k_aux"], k_aux_max)
        loss = loss + hp["aux_coeff"] * aux
    return loss, dict(nmse=mse, l0=l0, aux=aux, fired=fired, kth=kth, rows=jnp.int32(x.shape[0]))


def _apply(state, hp, grads, out, frac, *, dead_after):
    """Adam step with the radial part of the decoder gradient removed, then unit decoder rows;
    dead-latent counters and BatchTopK's threshold updated."""
    params = state["params"]
    grads = {**grads, "W_dec": M.project_out_radial(grads["W_dec"], params["W_dec"])}
    updates, opt = ADAM.update(grads, state["opt"])
    params = optax.apply_updates(params, jax.tree_util.tree_map(lambda u: -hp["lr"] * frac * u, updates))
    params = {**params, "W_dec": M.unit_rows(params["W_dec"])}
    since = jnp.where(out["fired"], 0, state["since"] + out["rows"])
    thr, kth = state["thr"], out["kth"]
    thr = jnp.where(thr < 0, kth, (1 - THRESHOLD_RATE) * thr + THRESHOLD_RATE * kth)
    metrics = dict(nmse=out["nmse"], l0=out["l0"], aux=out["aux"], dead=(since >= dead_after).mean())
    return dict(params=params, opt=opt, since=since, thr=thr), metrics


def _group_step(state, hp, batch, frac, *, static, dead_after):
    kind, k_max, k_aux_max = static
    x = jnp.take(batch, hp["layer"], axis=0).astype(jnp.float32) * hp["scale"][:, None, None]

    def grads(with_aux):
        loss = functools.partial(_loss, kind=kind, k_max=k_max, k_aux_max=k_aux_max,
                                 dead_after=dead_after, with_aux=with_aux)
        return jax.vmap(jax.grad(loss, has_aux=True))(state["params"], x, hp, state["since"])

    if kind == "relu":
        g, out = grads(False)
    else:  # outside the vmap, so that steps without a dead latent skip AuxK entirely
        g, out = jax.lax.cond(jnp.any(state["since"] >= dead_after), lambda: grads(True), lambda: grads(False))
    apply = functools.partial(_apply, dead_after=dead_after)
    return jax.vmap(apply, in_axes=(0, 0, 0, 0, None))(state, hp, g, out, frac)


@functools.partial(jax.jit, static_argnames=("statics", "dead_after"), donate_argnums=0)
def _step(states, hps, batch, frac, *, statics, dead_after):
    out = [_group_step(s, h, batch, frac, static=st, dead_after=dead_after)
           for s, h, st in zip(states, hps, statics)]
    return tuple(o[0] for o in out), tuple(o[1] for o in out)


@functools.partial(jax.jit, static_argnames=("init",))
def _layer_stats(x, init: str):
    """Input scale and initial ``b_dec`` (in scaled units) of one layer's first batch."""
    x = x.astype(jnp.float32)
    scale = jnp.sqrt(x.shape[-1]) / jnp.maximum(jnp.linalg.norm(x, axis=-1).mean(), 1e-12)
    if init == "zeros":
        return scale, jnp.zeros(x.shape[-1], jnp.float32)
    return scale, M.geometric_median(x * scale) if init == "geometric_median" else (x * scale).mean(0)


@functools.partial(jax.jit, static_argnames=("d_sae",))
def _init_member(seed, b_dec, *, d_sae):
    return _state(M.init_params(jax.random.PRNGKey(seed), b_dec.shape[0], d_sae, b_dec))


def _state(params):
    return dict(params=params, opt=ADAM.init(params), since=jnp.zeros(params["b_enc"].shape, jnp.int32),
                thr=jnp.float32(-1))


def _given(params, scale):
    """Given raw-unit params in the scaled units of training (:func:`.model.fold_scale` undone)."""
    params = {k: jnp.asarray(params[k], jnp.float32) for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    return {**M.fold_scale(params, 1 / scale), "W_dec": M.unit_rows(params["W_dec"])}


def _init_group(configs, rows, stats, initial):
    """Stacked state and hyperparameters of one group: ``rows`` is each config's index into
    the batch's layer axis, ``initial`` its starting params (None: a fresh SAE)."""
    states, hps = [], []
    for cfg, row, start in zip(configs, rows, initial):
        scale, b_dec = stats[row]
        states.append(_init_member(cfg.seed, b_dec, d_sae=cfg.d_sae) if start is None
                      else _state(_given(start, scale)))
        hps.append(dict(k=np.int32(cfg.k), l1=np.float32(cfg.l1), aux_coeff=np.float32(cfg.aux_coeff),
                        k_aux=np.int32(cfg.k_aux), lr=np.float32(cfg.learning_rate),
                        layer=np.int32(row), scale=np.float32(scale)))
    stack = lambda trees: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)
    return stack(states), stack(hps)


def _groups(configs) -> dict:
    groups: dict = {}
    for i, cfg in enumerate(configs):
        if cfg.kind not in M.TRAINABLE:
            raise ValueError(f"cannot train kind {cfg.kind!r}; trainable kinds are {M.TRAINABLE}")
        groups.setdefault((cfg.kind, cfg.d_sae, cfg.d_in), []).append(i)
    return groups


def schedule(t: int, steps: int, warmup: float, decay: float) -> float:
    """Learning-rate factor at step ``t``: linear warm-up, constant, linear decay to 0."""
    up = min(1.0, (t + 1) / max(1.0, warmup * steps))
    return up * min(1.0, (steps - t) / max(1.0, decay * steps))


def train_saes(batches: Iterable, configs: Sequence[M.SAEConfig], *, steps: int,
               layers: Sequence[int] | None = None, dead_after: int = 500_000, warmup: float = 0.01,
               decay: float = 0.2, init: str = "geometric_median", log_every: int = 50,
               initial: Sequence[dict | None] | None = None, progress: bool = False) -> list[TrainedSAE]:
    """Train every SAE of ``configs`` on the same ``steps`` batches ``[L, B, d_in]`` (module
    docstring) -> one :class:`TrainedSAE` per config, in order. ``initial`` (one per config,
    None for a fresh SAE): params to start from, in raw units (e.g. a saved SAE's, to train on)."""
    if init not in ("geometric_median", "mean", "zeros"):
        raise ValueError(f"init must be 'geometric_median', 'mean' or 'zeros', got {init!r}")
    batches = iter(batches)
    first = np.asarray(next(batches))
    layers = list(range(first.shape[0])) if layers is None else list(layers)
    missing = sorted({c.layer for c in configs} - set(layers))
    if missing:
        raise ValueError(f"configs read layers {missing}, not among the batches' layers {layers}")
    rows = [layers.index(c.layer) for c in configs]
    stats = {r: tuple(np.asarray(v) for v in _layer_stats(jnp.asarray(first[r]), init=init))
             for r in sorted(set(rows))}
    groups = _groups(configs)
    members = list(groups.values())
    initial = [None] * len(configs) if initial is None else list(initial)
    init_g = [_init_group([configs[i] for i in m], [rows[i] for i in m], stats, [initial[i] for i in m])
              for m in members]
    states, hps = tuple(g[0] for g in init_g), tuple(g[1] for g in init_g)
    statics = tuple((kind, max(configs[i].k for i in m), max(configs[i].k_aux for i in m))
                    for (kind, _, _), m in zip(groups, members))
    history = [{name: [] for name in ("step",) + METRICS} for _ in configs]
    it = range(steps)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="training SAEs", unit="step")
    for t in it:
        batch = first if t == 0 else _next(batches, t)
        states, metrics = _step(states, hps, batch, jnp.float32(schedule(t, steps, warmup, decay)),
                                statics=statics, dead_after=dead_after)
        if t % log_every == 0 or t == steps - 1:
            _log(history, members, metrics, t)
    return _results(configs, members, states, stats, rows, history)


def _next(batches, t):
    try:
        return np.asarray(next(batches))
    except StopIteration:
        raise ValueError(f"the batches ran out after {t} steps; pass more (more epochs) or fewer steps") from None


def _log(history, members, metrics, t):
    for m, out in zip(members, jax.device_get(metrics)):
        for j, i in enumerate(m):
            history[i]["step"].append(t)
            for name in METRICS:
                history[i][name].append(float(out[name][j]))


def _results(configs, members, states, stats, rows, history) -> list[TrainedSAE]:
    out = [None] * len(configs)
    for m, state in zip(members, jax.device_get(states)):
        for j, i in enumerate(m):
            cfg, scale = configs[i], float(stats[rows[i]][0])
            params = {k: np.asarray(v[j]) for k, v in state["params"].items()}
            if cfg.kind == "batchtopk":
                params["threshold"] = np.full((cfg.d_sae,), max(float(state["thr"][j]), 0.0), np.float32)
            params = {k: np.asarray(v, np.float32) for k, v in M.fold_scale(params, scale).items()}
            out[i] = TrainedSAE(cfg, params, scale, {k: np.asarray(v) for k, v in history[i].items()})
    return out
