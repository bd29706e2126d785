"""flowprof's command line, run from a checkout: ``python cli.py trace transformer --emb 512``.

The CLI lives in :mod:`flowprof.cli`; installed, the ``flowprof`` console script and
``python -m flowprof`` run the same ``main``.
"""

import sys

from flowprof.cli import main

if __name__ == "__main__":
    sys.exit(main())
