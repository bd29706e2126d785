"""flowprof's command line: parses arguments, calls the library, prints and writes.

Only this package prints, writes files and picks exit codes: 0 success, 2 bad input or usage
(one line on stderr, no traceback), 1 internal error. Heavy packages (torch, torchvision,
matplotlib) are imported inside the commands, so ``--help`` and usage errors stay fast.

Layout:

- ``commands/NAME.py``: one module per command, each defining ``COMMAND``, a
  :class:`~flowprof.cli.command.Command` (arguments, ``--help`` example, handler). A new module
  there is a new command.
- ``command.py``: the Command record and the discovery of the commands.
- ``emit.py``: the one emitter: ``--format table|csv|json`` to stdout, and every output file.
- ``options.py``: argument types and the option groups commands share; a model's own options
  come from its config dataclass (``flowprof/models/config.py``).
- ``main.py``: the parser and the mapping of errors to exit codes.
"""

from flowprof.cli.emit import save_figure, write_atomic
from flowprof.cli.main import build_parser, main

__all__ = ["build_parser", "main", "save_figure", "write_atomic"]
