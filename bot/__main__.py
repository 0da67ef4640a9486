"""`python -m bot`: the same as `castfinder bot`."""

import sys

from .app import run

if __name__ == "__main__":
    sys.exit(run())
