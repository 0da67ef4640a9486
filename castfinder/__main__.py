import sys

from castfinder.cli import main

sys.exit(main())
