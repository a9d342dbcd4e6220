"""``python -m sslray.cli ...``: the same as the ``sslray`` command (Ray jobs start it this way)."""

import sys

from sslray.cli import main

sys.exit(main())
