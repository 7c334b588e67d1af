"""`python -m headstart VERB ...` is the same as `headstart VERB ...`."""

import sys

from headstart.recipes.cli import main

sys.exit(main())
