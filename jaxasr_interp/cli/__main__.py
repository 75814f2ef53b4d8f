"""``python -m jaxasr_interp.cli``: the ``jaxasr-interp`` command without the console script
(``python -m jaxasr_interp.cli.main`` works too, but runpy warns that the module was imported
by the package first)."""

import sys

from jaxasr_interp.cli.main import main

sys.exit(main())
