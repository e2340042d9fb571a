"""``python -m lab.hosts`` is ``lab/run``."""

import sys

from .cli import main

sys.exit(main())
