"""A ``flax.nnx`` view of a loaded Whisper model: ``jai.nnx.Whisper(model)``.

For nnx code (a probe or an adapter trained jointly with the model, optax over
``nnx.Param``) that wants the model as an ``nnx.Module`` without leaving Flax.

Contract:

- ``Whisper(model)`` (a :class:`jai.Model <jaxasr_interp.whisper.api.Model>`) or
  ``Whisper(params, dims=dims)`` (the bare tree or a Flax collection ``{"params": tree}``) holds
  every array of the parameter tree as an ``nnx.Param``, in the same nested dicts under the same
  names: ``m.encoder["blocks"]["attn"]["query"]["kernel"]`` is the ``nnx.Param`` of
  ``params["encoder"]["blocks"]["attn"]["query"]["kernel"]`` (the blocks still stacked on a leading
  layer axis). Hence ``nnx.to_pure_dict(nnx.state(m, nnx.Param))`` (and the ``Param`` state of
  ``nnx.split(m)``) is the parameter tree again, path for path and array for array, for a module
  with nothing else attached; :meth:`Whisper.params_tree` is that tree for ``encoder`` / ``decoder``
  alone, whatever else has been attached to the module.
- ``dims`` is a static attribute (part of the ``GraphDef``, not of the state).
- ``m(mel, tokens, edits=..., capture=...)`` is exactly :func:`jai.forward
  <jaxasr_interp.whisper.model.forward>` on the module's current parameter values, returning
  ``(logits, acts)``; :meth:`Whisper.encode` / :meth:`Whisper.decode` are :func:`jai.encode` /
  :func:`jai.decode`. Nothing is recomputed or reimplemented: the nnx view only carries the
  arrays, so edits, captures, ``dtype`` and ``precision`` mean what they mean for the pure
  functions, and the outputs are bit-identical.
- :meth:`Whisper.to_model` gives a ``jai.Model`` with the current (e.g. trained) parameters, for
  ``jai.transcribe`` and the other pure-function tools.

One optax step training only the decoder's final LayerNorm (``wrt=`` a filter; every other
parameter is left as it was)::

    import jax.numpy as jnp
    import optax
    from flax import nnx
    import jaxasr_interp as jai

    model = jai.load("tiny.en")
    m = jai.nnx.Whisper(model)
    mel = jai.log_mel(jai.load_audio(jai.sample_path("jfk.wav")), n_mels=model.dims.n_mels)
    tokens = jnp.asarray(model.tokenizer.prompt() + model.tokenizer.encode(" And so"))
    final_ln = jai.nnx.params_under("decoder/ln")          # an nnx filter: Params under that path

    opt = nnx.Optimizer(m, optax.sgd(1e-3), wrt=final_ln)

    def loss_fn(m):
        logits, _ = m(mel, tokens[:-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[1:]).mean()

    @nnx.jit
    def step(m, opt):
        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, final_ln))(m)
        opt.update(m, grads)                 # flax >= 0.11: update(model, grads)
        return loss

    loss = step(m, opt)
    trained = m.to_model(model)              # a jai.Model again: jai.transcribe(trained, ...)

An adapter is an ordinary nnx submodule attached beside the parameters (``m.probe =
nnx.Linear(...)``); train it with ``wrt=nnx.All(nnx.Param, nnx.PathContains("probe"))`` and
read the activations it needs through ``capture=`` (or feed its output back with
``edits={site: jai.add(...)}``). When only decoder parameters train, run :meth:`Whisper.encode`
once outside the step and call :meth:`Whisper.decode` inside it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp
from flax import nnx

from jaxasr_interp.core.engine import unwrap
from jaxasr_interp.whisper import model as _model
from jaxasr_interp.whisper.config import Dims

__all__ = ["Whisper", "params_under"]

# flax >= 0.12 asks for container attributes holding Variables to be marked as data.
_data = getattr(nnx, "data", lambda value: value)


def _value(variable: nnx.Variable):
    return variable.get_value() if hasattr(variable, "get_value") else variable.value


def _as_params(tree):
    """Nested mappings of arrays -> the same nested dicts of ``nnx.Param``."""
    if isinstance(tree, Mapping):
        return {key: _as_params(value) for key, value in tree.items()}
    return nnx.Param(jnp.asarray(tree))


def _as_arrays(tree):
    """Nested dicts of ``nnx.Variable`` -> the same nested dicts of their current values."""
    if isinstance(tree, Mapping):
        return {key: _as_arrays(value) for key, value in tree.items()}
    return _value(tree) if isinstance(tree, nnx.Variable) else tree


def params_under(*prefixes: str):
    """An nnx filter selecting the ``nnx.Param`` leaves under any of the given paths
    (``"decoder/ln"``, ``"decoder/blocks/cross_attn_ln"``), for ``nnx.Optimizer(wrt=...)``,
    ``nnx.DiffState`` and ``nnx.state``."""
    if not prefixes:
        raise ValueError("params_under needs at least one path, e.g. 'decoder/ln'")
    keys = [tuple(p.strip("/").split("/")) for p in prefixes]

    def under(path, _value) -> bool:
        path = tuple(str(part) for part in path)
        return any(path[:len(k)] == k for k in keys)

    return nnx.All(nnx.Param, under)


class Whisper(nnx.Module):
    """A Whisper model as an ``nnx.Module`` (see the module docstring for the contract).

    ``Whisper(model)`` with a ``jai.Model``, or ``Whisper(params, dims=dims)`` with a parameter
    tree (or ``{"params": tree}``).
    """

    def __init__(self, model_or_params: Any, *, dims: Dims | None = None):
        if hasattr(model_or_params, "params") and hasattr(model_or_params, "dims"):
            params = model_or_params.params
            if dims is not None and dims != model_or_params.dims:
                raise ValueError(f"dims={dims} disagrees with the model's {model_or_params.dims}")
            dims = model_or_params.dims
        else:
            params = model_or_params
        if dims is None:
            raise TypeError("Whisper(params, dims=...) needs dims when given a bare parameter tree")
        params = unwrap(params)
        if not isinstance(params, Mapping) or set(params) != {"encoder", "decoder"}:
            got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
            raise ValueError(f"expected a Whisper parameter tree with keys ['decoder', 'encoder'], got {got}")
        self.dims = dims  # static: hashable, part of the GraphDef
        self.encoder = _data(_as_params(params["encoder"]))
        self.decoder = _data(_as_params(params["decoder"]))

    @classmethod
    def from_params(cls, params, dims: Dims) -> "Whisper":
        """The module holding ``params`` (a tree or ``{"params": tree}``)."""
        return cls(params, dims=dims)

    def params_tree(self) -> dict:
        """The pure parameter tree ``{"encoder": ..., "decoder": ...}`` of the current values
        (traced values inside ``nnx.jit`` / ``nnx.grad``), as the pure functions take it."""
        return {"encoder": _as_arrays(self.encoder), "decoder": _as_arrays(self.decoder)}

    def to_model(self, like):
        """A ``jai.Model`` like ``like`` (its tokenizer and source) with this module's parameters."""
        if like.dims != self.dims:
            raise ValueError(f"the model's dims {like.dims} are not this module's {self.dims}")
        return dataclasses.replace(like, params=self.params_tree())

    def __call__(self, mel, tokens, *, edits=None, capture=(), dtype=jnp.float32,
                 precision: str | None = "highest"):
        """``jai.forward`` on the current parameters: mel [n_mels, frames], tokens [T] ->
        ``(logits [T, n_vocab], acts)``."""
        return _model.forward(self.params_tree(), mel, tokens, dims=self.dims, edits=edits,
                              capture=capture, dtype=dtype, precision=precision)

    def encode(self, mel, **kwargs):
        """``jai.encode`` on the current parameters -> ``(audio_features, acts)`` (keywords:
        ``edits``, ``capture``, ``start_layer``, ``dtype``, ``precision``)."""
        return _model.encode(self.params_tree(), mel, dims=self.dims, **kwargs)

    def decode(self, tokens, audio_features, **kwargs):
        """``jai.decode`` on the current parameters -> ``(logits, acts)`` (or with ``cache=``,
        ``(logits, acts, cache)``; keywords: ``edits``, ``capture``, ``cache``, ``offset``,
        ``start_layer``, ``cross``, ``dtype``, ``precision``)."""
        return _model.decode(self.params_tree(), tokens, audio_features, dims=self.dims, **kwargs)
