"""``python -m heapa.sim``: the same as ``heapa simulate``."""

import sys

from . import main

sys.exit(main())
