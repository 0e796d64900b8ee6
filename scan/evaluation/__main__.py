"""``python -m scan.evaluation``: the same as ``scan-eval``."""

import sys

from scan.evaluation.cli import main

sys.exit(main())
