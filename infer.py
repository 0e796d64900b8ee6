#!/usr/bin/env python
"""Translate a portrait (or a folder of them) with a trained scan model.

    python infer.py --checkpoint model.pt --input me.jpg --output me_anime.png
    python infer.py --help
"""

import sys

from scan.infer_cli import main

if __name__ == "__main__":
    sys.exit(main())
