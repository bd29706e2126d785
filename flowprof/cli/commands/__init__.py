"""One module per ``flowprof`` command, each defining ``COMMAND`` (a :class:`Command`)."""
