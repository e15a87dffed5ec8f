"""``python -m mkdt_bench.cli``."""

import sys

from mkdt_bench.cli import main

sys.exit(main())
