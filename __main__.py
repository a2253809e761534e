"""``python -m meddiff``: the ``meddiff`` command where its console script is not installed (a GPU machine that
imports this checkout from PYTHONPATH)."""

import sys

from meddiff.cli import main

sys.exit(main())
