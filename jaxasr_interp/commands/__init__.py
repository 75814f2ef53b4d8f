"""Analysis commands of the ``jaxasr-interp`` CLI: one module per concern, each exposing
``register(sub)`` (and ``register_experiments(exp_sub)`` for ``experiment`` subcommands)."""
