"""``python -m stream.cli``."""

import sys

from stream.cli import main

sys.exit(main())
