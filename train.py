#!/usr/bin/env python
"""Train a SCAN model on two unpaired image folders.

    python train.py fit --config configs/selfie2anime.yaml --data.root /path/to/selfie2anime
    python train.py fit --help            # every option; any of them can be set on the command line
"""

import sys

from scan.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
