"""``python -m arc2face_core``: the command line (see ``cli.main``)."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
