"""``python -m flowprof``: the same CLI as the ``flowprof`` console script."""

import sys

from flowprof.cli import main

sys.exit(main())
