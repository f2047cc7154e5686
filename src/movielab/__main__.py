"""`python -m movielab` runs the command line."""

import sys

from movielab.cli import main

sys.exit(main())
