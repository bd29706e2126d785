"""Every error flowprof raises on purpose, under one root: ``FlowprofError``.

Importing this module imports nothing else (no torch), so a caller can catch flowprof's errors
before torch is loaded::

    from flowprof import FlowprofError

Three kinds, and the CLI's exit code for each (docs/design.md, "Contracts"):

- :class:`BadInputError` (exit 2): the user's input is wrong: a malformed option, an unknown
  model, a missing data file. The message is one line that says what to do.
- :class:`UnsupportedModelError` (exit 2): the input is well formed but flowprof cannot analyse
  the model (shape propagation fails, it branches on values shapes cannot decide).
- :class:`InternalError` (exit 1): flowprof's own arithmetic or machinery failed: a bug to report.

Each subclass says where it comes from; no two share a name.
"""

from __future__ import annotations

__all__ = [
    "BadInputError",
    "BadSpecError",
    "CheckpointError",
    "DataError",
    "FlowprofError",
    "InternalError",
    "LatexError",
    "ModelError",
    "OutputFolderError",
    "PartitionError",
    "PipelineError",
    "RenderError",
    "RenderTimeout",
    "TorchMismatchError",
    "TrainingError",
    "UnsupportedModelError",
    "UsageError",
]


class FlowprofError(Exception):
    """The root of every error flowprof raises on purpose."""


class BadInputError(FlowprofError, ValueError):
    """The user's input is wrong (exit code 2); the message is one line."""


class UnsupportedModelError(FlowprofError):
    """A well-formed model flowprof cannot analyse (exit code 2): shape propagation fails, it has
    no tensor input, or it branches on tensor values that shapes alone cannot decide."""


class InternalError(FlowprofError, RuntimeError):
    """flowprof itself failed (exit code 1): a bug to report, not the user's input."""


# -- bad input, by where it is found --


class BadSpecError(BadInputError):
    """A malformed or impossible option: a shape, a dtype, a depth, a layer spec, a sweep."""


class ModelError(BadInputError):
    """A model name, option, factory or input that cannot be built."""


class PartitionError(BadSpecError):
    """A stage count or cut position the model cannot take."""


class DataError(BadInputError):
    """A data source that is missing or corrupt; the message says how to fix it."""


class TrainingError(BadInputError):
    """A training request that cannot run (a bad option, a mismatched resume)."""


class CheckpointError(BadInputError):
    """A checkpoint that is missing, unreadable or from a different run."""


class UsageError(BadInputError):
    """Bad command-line usage found by the CLI itself."""


class OutputFolderError(BadInputError):
    """An output folder that a run may not replace: it holds files flowprof did not write, or it
    is a file (:func:`flowprof.atomic.atomic_dir`)."""


# -- not the user's input --


class TorchMismatchError(InternalError):
    """torch disagrees with flowprof's shape arithmetic."""


class PipelineError(InternalError):
    """A distributed pipeline run failed or timed out (its processes were cleaned up)."""


class LatexError(FlowprofError, RuntimeError):
    """The LaTeX engine failed on the report; ``log`` holds the end of its log."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


class RenderError(InternalError):
    """Graphviz failed on a diagram flowprof wrote (the message has dot's error)."""


class RenderTimeout(RenderError):
    """Graphviz did not finish a diagram within the time limit; it was stopped."""
