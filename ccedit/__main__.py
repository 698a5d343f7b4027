"""`python -m ccedit ...` runs the command line, as `accelerate launch -m ccedit train ...` needs."""

import sys

from .cli import main

sys.exit(main())
