"""``python -m arc2face_core``: the command line (see ``headless.cli``)."""

import sys

from .headless.cli import main

if __name__ == "__main__":
    sys.exit(main())
