"""Fuzzing the CLI's argument grammars (issue 21): every generated command line either succeeds
or exits 2 with one line on stderr, never a traceback and never exit 1 (an internal error).

Grammars: the shapes of ``--input`` (sizes, dtypes, parameter names), ``shape``'s input and layer
specs, model names (built-in, near misses, torchvision's, ``module:factory`` and file forms,
malformed), and numeric options. Each draws well-formed and malformed pieces alike, so that both
the happy path and the errors are reached. The CLI runs in this process (``flowprof.cli.main``):
after the first call, a call takes milliseconds, so the tests run 4 x 150 = 600 examples.
"""

from __future__ import annotations

import contextlib
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from flowprof import cli

EXAMPLES = 150

# sizes: ordinary, edge (0, negative), huge (past torch's 2^60 elements), and not numbers
SIZES = st.one_of(
    st.integers(1, 64).map(str),
    st.sampled_from(["0", "-1", "-7", "99999999999", "4611686018427387904", "1e3", "", "x", "3.5"]),
)


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # (argparse's --help; none are generated)
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def check(argv: list[str]) -> None:
    code, _, err = run(argv)
    assert "Traceback" not in err, (argv, err)
    assert "internal error" not in err, (argv, err)
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        lines = err.splitlines()
        assert len(lines) == 1, (argv, err)
        assert lines[0].startswith("flowprof"), (argv, err)


@st.composite
def input_shapes(draw) -> str:
    """``[NAME=]SHAPE[:DTYPE][,...]``."""
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        dims = draw(st.lists(SIZES, min_size=1, max_size=5))
        shape = "x".join(dims)
        if draw(st.booleans()):
            shape += ":" + draw(st.sampled_from(["int64", "float16", "bool", "fp16", "INT8", ""]))
        if draw(st.integers(0, 3)) == 0:
            shape = draw(st.sampled_from(["x", "input", "1bad", "a b", ""])) + "=" + shape
        parts.append(shape)
    return ",".join(parts)


@settings(max_examples=EXAMPLES)
@given(model=st.sampled_from(["lenet5", "lenet5-modern", "lenet5-dws"]), shapes=input_shapes())
def test_input_shapes(model, shapes):
    check(["trace", model, "--input", shapes, "--format", "json"])


@st.composite
def layer_specs(draw) -> str:
    kind = draw(st.sampled_from(["conv", "convT", "maxpool", "avgpool", "pool", "CONV", ""]))
    if kind.lower().startswith("conv"):
        head = f"{draw(SIZES)}@{draw(SIZES)}" + (f"x{draw(SIZES)}" if draw(st.booleans()) else "")
    else:
        head = draw(SIZES) + (f"x{draw(SIZES)}" if draw(st.booleans()) else "")
    options = draw(
        st.lists(
            st.tuples(st.sampled_from(["s", "p", "d", "g", "op", "nobias", "q", ""]), SIZES),
            max_size=3,
        )
    )
    text = f"{kind}:{head}" + "".join(f"/{o}" if o == "nobias" else f"/{o}{n}" for o, n in options)
    return text if draw(st.integers(0, 9)) else text.replace(":", "")


@settings(max_examples=EXAMPLES)
@given(
    shape=st.lists(SIZES, min_size=1, max_size=4).map("x".join),
    layers=st.lists(layer_specs(), min_size=1, max_size=3),
)
def test_shape_layer_specs(shape, layers):
    check(["shape", shape, *layers, "--format", "json"])


# No generated module name may be one that exists: ``os:_exit`` would end the test run.
NAME_PIECES = st.text("abz_.-/:", min_size=0, max_size=8)
MODEL_NAMES = st.one_of(
    st.sampled_from(["lenet5", "lenet5-dws", "lenet5-modern-dws", "transformer"]),
    st.sampled_from(["lenet6", "LeNet5", "lenet", "trans", "", " ", "-", "--"]),
    NAME_PIECES.map(lambda s: f"torchvision:{s}"),
    NAME_PIECES.map(lambda s: f"zz_fuzz{s}"),
    NAME_PIECES.map(lambda s: f"zz_fuzz.{s}:make"),
    NAME_PIECES.map(lambda s: f"zz_fuzz_{s}.py:make"),
    st.sampled_from([":", "::", "a:", ":b", "zz_fuzz:1x", "zz_fuzz.py:", "a..b:c", ".py:f"]),
)


@settings(max_examples=EXAMPLES)
@given(model=MODEL_NAMES)
def test_model_names(model):
    if model.startswith("-"):
        model = "--"  # (an option-looking name; "--" ends the options)
    check(["trace", "--input", "1x1x32x32", "--format", "json", "--", model])


NUMBERS = st.one_of(
    st.integers(-2, 70).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e2", "0x10", "", "12.0", " 8", "١٢"]),
)


@settings(max_examples=EXAMPLES)
@given(
    options=st.dictionaries(
        st.sampled_from(
            ["--emb", "--heads", "--ffn", "--enc-layers", "--dec-layers", "--seq-len", "--batch"]
            + ["--depth", "--src-len", "--tgt-len"]
        ),
        NUMBERS,
        max_size=4,
    ),
    dtype=st.sampled_from([None, "fp16", "fp32", "int8", "fp4", ""]),
)
def test_numeric_options(options, dtype):
    # small sizes where none is given, so that a success stays fast
    options = {"--emb": "16", "--heads": "2", "--seq-len": "4"} | options
    argv = ["trace", "transformer", "--format", "json"]
    for flag, value in options.items():
        argv += [f"{flag}={value}"]
    if dtype is not None:
        argv += [f"--dtype={dtype}"]
    check(argv)
