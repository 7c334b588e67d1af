"""`python -m recipes VERB ...` is the same as `headstart VERB ...`."""

import sys

from recipes.cli import main

sys.exit(main())
