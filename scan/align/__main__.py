import sys

from scan.align.cli import main

sys.exit(main())
