"""One error root: every error flowprof raises on purpose is a FlowprofError, catchable without
torch, of one of three kinds (bad input, unsupported model, internal), and no two share a name."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import flowprof
from flowprof import errors

ROOT = Path(__file__).resolve().parents[1]


def _flowprof_modules() -> list[str]:
    names = [flowprof.__name__]
    for info in pkgutil.walk_packages(flowprof.__path__, prefix="flowprof."):
        if info.name != "flowprof.__main__":  # (runs the CLI when imported)
            names.append(info.name)
    return names


def _error_classes() -> dict[str, list[type]]:
    """Every exception class defined in flowprof's modules, by name."""
    found: dict[str, list[type]] = {}
    for name in _flowprof_modules():
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
            ):
                found.setdefault(obj.__name__, []).append(obj)
    return found


def test_error_root_is_importable_without_torch():
    code = (
        "import sys\n"
        "from flowprof import FlowprofError, BadInputError, UnsupportedModelError, InternalError\n"
        "from flowprof.errors import ModelError, DataError\n"
        "assert issubclass(ModelError, FlowprofError)\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_no_two_error_classes_share_a_name():
    found = _error_classes()
    shared = {name: [c.__module__ for c in cs] for name, cs in found.items() if len(cs) > 1}
    assert shared == {}


def test_every_error_is_a_flowprof_error_of_one_kind():
    kinds = (errors.BadInputError, errors.UnsupportedModelError, errors.InternalError)
    # Control flow, not errors: a training run stopped by a signal unwinds with the first; a
    # sweep whose numbers have no formula falls back to tracing each point with the second
    # (comm_sweep catches it; it never reaches a user).
    control_flow = {"TrainingInterrupted", "_NoFormula"}
    for name, (cls,) in _error_classes().items():
        if name in control_flow or cls is errors.FlowprofError:
            continue
        assert issubclass(cls, errors.FlowprofError), name
        if cls in kinds or cls is errors.LatexError:  # (a missing or failing external program)
            continue
        assert sum(issubclass(cls, k) for k in kinds) == 1, name


def test_the_three_kinds_are_distinct():
    kinds = (errors.BadInputError, errors.UnsupportedModelError, errors.InternalError)
    for a in kinds:
        for b in kinds:
            assert a is b or not issubclass(a, b)
