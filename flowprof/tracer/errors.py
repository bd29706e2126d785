"""Errors the tracer raises for bad input; ``cli.py`` turns each into one line and exit code 2."""


class FlowprofError(Exception):
    """Base of every error that is the user's input, not a bug in flowprof."""


class BadSpecError(FlowprofError, ValueError):
    """A malformed option: a shape, a dtype, a depth."""


class UnsupportedModelError(FlowprofError):
    """A model that cannot be analysed (it fails on shape propagation, or has no tensor input)."""
