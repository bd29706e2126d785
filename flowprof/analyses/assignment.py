"""Every answer of docs/assignment.md, computed: the data behind the one-command report.

:func:`run_assignment` runs, in order:

- Problem 1b: the shape after each layer of 13x15x3 -> conv 7@4x6 -> conv 8@3x4/s2/p1 ->
  max-pool 2x2 (:func:`analyses.conv_shapes.propagate`, confirmed by torch);
- Problem 1a: every convolution mapping 8x8x5 to 5x5x3 and whether 3x3 and 2x2 kernels can
  (:func:`analyses.conv_shapes.solve_conv`);
- Problems 2a/2b: LeNet-5 and its depthwise-separable twin trained on MNIST until the stated
  convergence rule fires (:mod:`training.loop`), each in its own single-threaded process when
  the machine has two cores or more, their checkpoints kept in a cache keyed by configuration,
  code and data (:mod:`training.cache`) so that an unchanged second run reuses them; ``quick``
  trains on a small subset for a few epochs instead;
- Problem 2c: multiplications and additions per layer and in total of both networks
  (:func:`analyses.op_compare.compare`);
- Problem 2d: the mapping f (:mod:`analyses.dws_mapping`) checked on each convolution, and f
  derived by :func:`flowprof.formula` from traces of each convolution and its twin
  (:mod:`analyses.dws_derived`);
- Problem 3: the transformer (emb 256, 8 heads, fp16) traced into block graphs at depths 1-3,
  and the communication sweep over the embedding size (:mod:`analyses.comm_sweep`), with its
  bits-versus-emb law derived by :func:`flowprof.formula` and checked at the sweep's points;
- the pipeline check (2 stages, small transformer, :mod:`distributed`) when that package exists;
- what common peers (FlopCounterMode, fvcore, thop, ptflops) report for both LeNets, where
  they are installed.

Pure computation: nothing is printed or written. ``progress(step, done, total)`` is called before
each step, during training after each epoch, and once at the end with ``done == total``.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Progress = Callable[[str, int, int], None]

# The assignment's questions, as data (docs/assignment.md).
P1B_INPUT = "13x15x3"
P1B_LAYERS = ("conv:7@4x6", "conv:8@3x4/s2/p1", "maxpool:2x2")
P1A_INPUT = "8x8x5"
P1A_OUTPUT = "5x5x3"
P1A_KERNELS = ("3x3", "2x2")
LENETS = ("lenet5", "lenet5-dws")
TRANSFORMER = {"emb": 256, "heads": 8}  # fp16 is the model's default
DIAGRAM_DEPTHS = (1, 2, 3)
SWEEP_EMB = (64, 128, 256, 512, 1024, 2048, 4096)
QUICK_SWEEP_EMB = (64, 256, 1024)
SWEEP_SEQ_LEN = (32, 64, 128, 256, 512)
PIPELINE_MODEL = "transformer"
PIPELINE_OPTIONS = {"emb": 64, "heads": 8, "seq_len": 16}  # small: the run takes seconds
PIPELINE_STAGES = 2
PIPELINE_DEPTH = 2  # cut only between whole layers
QUICK_TRAIN_SAMPLES = 1000
QUICK_TEST_SAMPLES = 300
QUICK_EPOCHS = 2
QUICK_BATCH_SIZE = 32  # 1,000 samples: enough steps in two epochs to show learning
PAPER_TEST_ERROR = 0.0095  # LeNet-5 on MNIST without distortions (LeCun et al. 1998, III.C)


@dataclass
class Problem1:
    """Shapes (1b) and the convolution solver (1a)."""

    input_shape: str
    layers: tuple[str, ...]
    steps: list[Any]  # analyses.conv_shapes.Step, one per layer
    solve_input: str
    solve_output: str
    solutions: Any  # analyses.conv_shapes.Solutions: every configuration
    kernels: dict[str, Any]  # "3x3" -> Solutions restricted to that kernel

    @property
    def final_shape(self) -> str:
        return str(self.steps[-1].output)

    def examples(self, n: int = 2) -> list[Any]:
        """``n`` configurations for 1a, the simplest first, each with a different kernel."""
        out, kernels = [], set()
        for step in self.solutions.configs:
            if step.layer.kernel not in kernels and not step.layer.transposed:
                out.append(step)
                kernels.add(step.layer.kernel)
            if len(out) == n:
                break
        return out


@dataclass
class Problem2:
    """Training (2a, 2b), counts (2c) and the mapping f (2d)."""

    source_description: str  # the whole dataset: name, source, folder, sample counts
    data_description: str  # what was trained on (after any subset)
    dataset: str
    source: str
    train_samples: int  # used for training (after any subset)
    test_samples: int
    runs: dict[str, Any]  # model name -> training.loop.TrainResult
    comparison: Any  # analyses.op_compare.Comparison (lenet5 vs lenet5-dws, depth 1)
    graphs: dict[str, Any]  # model name -> BlockGraph at depth 1 (for diagrams)
    derivation_text: list[str]
    derivation_latex: list[str]
    # model name -> analyses.training_cost.TrainingCost of its run (operations per training step,
    # per epoch and for the run)
    training_costs: dict[str, Any] = field(default_factory=dict)
    # analyses.dws_derived.Derivation: f derived from traces of each convolution and its twin
    derived_f: Any | None = None


@dataclass
class Problem3:
    """The transformer and its communication sweep."""

    config: dict[str, Any]
    graphs: dict[int, Any]  # depth -> BlockGraph
    sweep: Any | None  # analyses.comm_sweep.Sweep over emb
    seq_sweep: Any | None  # a Sweep over seq_len (full run only)
    explanation: list[str]
    sweep_error: str | None = None
    law: Any | None = None  # analyses.comm_sweep.SweepLaw of the emb sweep


@dataclass
class PipelineCheck:
    """The distributed run, or why there is none."""

    model: str
    options: dict[str, Any]
    stages: int
    depth: int | None
    result: Any | None  # distributed.PipelineResult
    error: str | None = None


@dataclass(frozen=True)
class PeerCount:
    """One peer's number for one model, or why there is none."""

    tool: str
    model: str
    value: int | None
    what: str  # what the number is called by the tool
    note: str = ""  # e.g. the ops it skipped, as it reports them
    params: int | None = None  # the parameters it counts, where it reports them


@dataclass
class AssignmentResults:
    """Everything :func:`run_assignment` computed, with timings and notes."""

    quick: bool
    problem1: Problem1
    problem2: Problem2
    problem3: Problem3
    pipeline: PipelineCheck | None
    peers: list[PeerCount]
    our_counts: dict[str, dict[str, int]]  # model -> macs, multiplications, additions, params
    convention: str
    tool_version: str
    torch_version: str
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --- steps ---------------------------------------------------------------------------------------


def solve_problem1() -> Problem1:
    """Problem 1a and 1b."""
    from flowprof.analyses.conv_shapes import propagate, solve_conv

    steps = propagate(P1B_INPUT, list(P1B_LAYERS))
    solutions = solve_conv(P1A_INPUT, P1A_OUTPUT)
    kernels = {k: solve_conv(P1A_INPUT, P1A_OUTPUT, kernel=k) for k in P1A_KERNELS}
    return Problem1(P1B_INPUT, P1B_LAYERS, steps, P1A_INPUT, P1A_OUTPUT, solutions, kernels)


def train_config(model: str, quick: bool) -> Any:
    """The training configuration of ``model``: until convergence, or the quick one."""
    from flowprof.training.loop import recipe

    if quick:
        return recipe(
            model,
            epochs=QUICK_EPOCHS,
            train_samples=QUICK_TRAIN_SAMPLES,
            test_samples=QUICK_TEST_SAMPLES,
            batch_size=QUICK_BATCH_SIZE,
        )
    return recipe(model)


def _train_worker(config: Any, data: Any, cache_root: Any, queue: Any) -> Any:
    """One training run (in a worker process or here); each finished epoch is put on ``queue``."""
    from flowprof.training.cache import train_cached
    from flowprof.training.loop import train

    def on_epoch(record: Any) -> None:
        queue.put((config.model, record.epoch))

    if cache_root is None:
        return train(config, data, on_epoch=on_epoch)
    return train_cached(config, data, cache_root, on_epoch=on_epoch)


def train_lenets(
    configs: Sequence[Any],
    data: Any,
    cache_root: str | Path | None,
    on_epoch: Callable[[str, int], None],
    parallel: bool,
) -> dict[str, Any]:
    """Train each of ``configs`` on ``data``: model name -> TrainResult.

    ``parallel``: each run in its own process (spawned; one torch thread each, so a core taken
    by another program slows a run down but never stalls it at a thread barrier); else one after
    the other here. ``cache_root``: reuse or resume runs kept there (None: always train).
    ``on_epoch(model, epoch)`` is called here, in this process, after each trained epoch.
    """
    if not parallel:
        import queue as queue_module

        events: Any = queue_module.SimpleQueue()
        runs = {}
        for config in configs:
            runs[config.model] = _train_worker(config, data, cache_root, events)
            while not events.empty():
                on_epoch(*events.get())
        return runs
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")  # no fork of a process that holds threads
    with context.Manager() as manager, ProcessPoolExecutor(len(configs), context) as pool:
        events = manager.Queue()
        futures = {pool.submit(_train_worker, c, data, cache_root, events): c for c in configs}
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            while not events.empty():
                on_epoch(*events.get())
        while not events.empty():
            on_epoch(*events.get())
        return {futures[f].model: f.result() for f in futures}


def trace_transformer(depths: Sequence[int] = DIAGRAM_DEPTHS) -> tuple[dict[str, Any], dict]:
    """The assignment's transformer traced once, grouped at each of ``depths``."""
    from flowprof import tracer
    from flowprof.models import registry

    built = registry.build("transformer", device="meta", **TRANSFORMER)
    meta = {"model": "transformer", "config": dict(built.config)}
    leaf = tracer.trace(built.module, built.example_inputs("meta"), meta=meta)
    return dict(built.config), {d: leaf.by_block(d) for d in depths}


def _lenet_graphs() -> dict[str, Any]:
    from flowprof import tracer
    from flowprof.models import registry

    graphs = {}
    for name in LENETS:
        built = registry.build(name, device="meta")
        meta = {"model": name, "config": dict(built.config)}
        graphs[name] = tracer.trace(built.module, built.example_inputs("meta"), depth=1, meta=meta)
    return graphs


def run_pipeline_check() -> PipelineCheck:
    """Two pipeline stages of a small transformer over torch.distributed (gloo, loopback)."""
    check = PipelineCheck(PIPELINE_MODEL, dict(PIPELINE_OPTIONS), PIPELINE_STAGES, None, None)
    if importlib.util.find_spec("flowprof.distributed") is None:
        check.error = "the distributed package is not installed"
        return check
    from flowprof.distributed import run_pipeline

    check.depth = PIPELINE_DEPTH
    try:
        check.result = run_pipeline(
            PIPELINE_MODEL,
            stages=PIPELINE_STAGES,
            model_options=dict(PIPELINE_OPTIONS),
            depth=PIPELINE_DEPTH,
        )
    except Exception as exc:  # a failed run is reported, not fatal to the report
        check.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    return check


def our_counts(graphs: dict[str, Any]) -> dict[str, dict[str, int]]:
    """flowprof's totals of the traced ``graphs`` (for the peers' comparison)."""
    out = {}
    for name, graph in graphs.items():
        t = graph.total()
        out[name] = {
            "macs": t.macs,
            "multiplications": t.multiplications,
            "additions": t.additions,
            "other": t.other,
            "params": graph.params(),
        }
    return out


def peer_counts(models: Sequence[str] = LENETS) -> list[PeerCount]:
    """What FlopCounterMode (built into torch) and the peers installed report for ``models``.

    Each peer runs on the model with real (random) weights and one example input; a peer that
    is not installed or fails gives a row with its reason and no number.
    """
    import contextlib
    import io
    import logging
    import warnings

    import torch

    from flowprof.models import registry

    out: list[PeerCount] = []
    for name in models:

        def fresh(name: str = name) -> tuple[Any, tuple]:
            built = registry.build(name, device="cpu")
            return built.module.eval(), built.example_inputs(
                "cpu", torch.Generator().manual_seed(0)
            )

        def attempt(tool: str, what: str, fn: Callable[[], tuple], name=name) -> None:
            quiet = io.StringIO()
            try:
                with (
                    contextlib.redirect_stdout(quiet),
                    contextlib.redirect_stderr(quiet),
                    warnings.catch_warnings(),
                    torch.no_grad(),
                ):
                    warnings.simplefilter("ignore")
                    value, note, params = fn()
                out.append(PeerCount(tool, name, int(value), what, note, params))
            except ImportError:
                out.append(PeerCount(tool, name, None, what, "not installed"))
            except Exception as exc:  # a peer that breaks on a model is a finding, not a crash
                out.append(PeerCount(tool, name, None, what, f"failed: {type(exc).__name__}"))

        def flop_counter() -> tuple[int, str, None]:
            from torch.utils.flop_counter import FlopCounterMode

            module, inputs = fresh()
            with FlopCounterMode(display=False) as counter:
                module(*inputs)
            return counter.get_total_flops(), "", None

        def fvcore() -> tuple[int, str, None]:
            from fvcore.nn import FlopCountAnalysis

            module, inputs = fresh()
            logger = logging.getLogger("fvcore")
            level = logger.level
            logger.setLevel(logging.ERROR)
            try:
                analysis = FlopCountAnalysis(module, inputs)
                analysis.unsupported_ops_warnings(False)
                analysis.uncalled_modules_warnings(False)
                total = analysis.total()
                skipped = analysis.unsupported_ops()
            finally:
                logger.setLevel(level)
            note = ", ".join(f"{op} x{n}" for op, n in sorted(skipped.items()))
            return total, f"skipped: {note}" if note else "", None

        def thop() -> tuple[int, str, int]:
            import thop as thop_module

            module, inputs = fresh()
            macs, params = thop_module.profile(module, inputs=inputs, verbose=False)
            return int(macs), "", int(params)

        def ptflops() -> tuple[int, str, int]:
            from ptflops import get_model_complexity_info

            module, inputs = fresh()
            macs, params = get_model_complexity_info(
                module,
                tuple(inputs[0].shape[1:]),
                as_strings=False,
                print_per_layer_stat=False,
                verbose=False,
            )
            return int(macs), "", int(params)

        attempt("torch FlopCounterMode", "FLOPs", flop_counter)
        attempt("fvcore", "flops", fvcore)
        attempt("thop", "MACs", thop)
        attempt("ptflops", "MACs", ptflops)
    return out


# --- the whole run -------------------------------------------------------------------------------


def run_assignment(
    quick: bool = False,
    data_dir: str | Path | None = None,
    progress: Progress | None = None,
    *,
    pipeline: bool = True,
    peers: bool = True,
    cache_dir: str | Path | None | bool = True,
    parallel: bool | None = None,
) -> AssignmentResults:
    """Compute every answer of docs/assignment.md (see the module docstring).

    ``quick``: train on a small subset for a few epochs and sweep fewer embedding sizes (for
    tests and a first look). ``data_dir``: MNIST IDX files to read (else the data layer's order
    of sources, training.mnist.load). ``pipeline`` / ``peers``: run those parts. ``cache_dir``:
    where trained checkpoints are kept and reused (True: training.cache's default folder;
    False or None: train afresh, keep nothing). ``parallel``: train the two LeNets in two
    processes (None: when the machine has two cores or more). Errors of the data layer
    (training.mnist.DataError) propagate: there is no report without data.
    """
    import os

    import torch

    from flowprof import tracer
    from flowprof.analyses import comm_sweep, dws_derived, dws_mapping, op_compare
    from flowprof.training import mnist

    if parallel is None:
        parallel = (os.cpu_count() or 1) >= 2
    train_steps = (
        [f"Problem 2: train {' and '.join(LENETS)} in parallel"]
        if parallel
        else [f"Problem 2: train {name}" for name in LENETS]
    )
    steps = [
        "Problem 1: shapes and the convolution solver",
        "Problem 2: load MNIST",
        *train_steps,
        "Problem 2c/2d: operation counts and f",
        "Problem 3: trace the transformer",
        "Problem 3: communication sweep",
    ]
    if pipeline:
        steps.append("pipeline check: 2 processes")
    if peers:
        steps.append("peers' counts")
    total = len(steps)
    seconds: dict[str, float] = {}
    notes: list[str] = []
    state = {"done": 0, "start": time.perf_counter(), "name": ""}

    def begin(name: str) -> None:
        if state["name"]:
            seconds[state["name"]] = time.perf_counter() - state["start"]
            state["done"] += 1
        state["name"], state["start"] = name, time.perf_counter()
        if progress is not None:
            progress(name, state["done"], total)

    begin(steps[0])
    p1 = solve_problem1()

    begin("Problem 2: load MNIST")
    data = mnist.load(data_dir=data_dir)

    def on_epoch(name: str, epoch: int) -> None:
        if progress is not None:
            progress(f"Problem 2: train {name}: epoch {epoch} done", state["done"], total)

    if cache_dir is True:
        from flowprof.training.cache import default_cache_root

        cache_dir = default_cache_root()
    cache_root = cache_dir or None
    if parallel:
        begin(train_steps[0])
        configs = [train_config(name, quick) for name in LENETS]
        runs = train_lenets(configs, data, cache_root, on_epoch, parallel=True)
    else:
        runs = {}
        for name, step in zip(LENETS, train_steps, strict=True):
            begin(step)
            runs |= train_lenets([train_config(name, quick)], data, cache_root, on_epoch, False)
    first = runs[LENETS[0]]

    begin("Problem 2c/2d: operation counts and f")
    comparison = op_compare.compare(LENETS[0], LENETS[1], depth=1)
    from flowprof.analyses import training_cost

    costs = {name: training_cost.of_run(runs[name]) for name in LENETS}
    derived_f = None
    try:
        derived_f = dws_derived.derive(comparison)
    except Exception as exc:  # reported in the report; the rest stands
        notes.append(f"f could not be derived from traces: {type(exc).__name__}: {exc}")
    p2 = Problem2(
        source_description=data.description,
        data_description=first.data_description,
        dataset=first.dataset,
        source=first.source,
        train_samples=first.train_samples,
        test_samples=first.test_samples,
        runs=runs,
        comparison=comparison,
        graphs=_lenet_graphs(),
        derivation_text=dws_mapping.derivation("text"),
        derivation_latex=dws_mapping.derivation("latex"),
        training_costs=costs,
        derived_f=derived_f,
    )

    begin("Problem 3: trace the transformer")
    config, graphs = trace_transformer()

    begin("Problem 3: communication sweep")
    emb_values = QUICK_SWEEP_EMB if quick else SWEEP_EMB
    sweep_error = None
    emb_sweep = seq_sweep = None
    explanation: list[str] = []
    try:
        # Traced point by point: the law below is checked against these traces.
        emb_sweep = comm_sweep.sweep(
            "transformer", emb=list(emb_values), heads=8, dtype="fp16", method="trace"
        )
        if not quick:
            seq_sweep = comm_sweep.sweep(
                "transformer",
                seq_len=list(SWEEP_SEQ_LEN),
                emb=256,
                heads=8,
                dtype="fp16",
                method="trace",
            )
        explanation = comm_sweep.explain(emb_sweep)
    except Exception as exc:  # reported in the report; the rest stands
        sweep_error = f"{type(exc).__name__}: {exc}"
        notes.append(f"the communication sweep failed: {sweep_error}")
    law = None
    if emb_sweep is not None:
        try:
            law = comm_sweep.law(emb_sweep)
        except Exception as exc:  # reported in the report; the rest stands
            notes.append(f"the bits-versus-emb law was not derived: {type(exc).__name__}: {exc}")
    p3 = Problem3(config, graphs, emb_sweep, seq_sweep, explanation, sweep_error, law)

    check = None
    if pipeline:
        begin("pipeline check: 2 processes")
        check = run_pipeline_check()
        if check.error:
            notes.append(f"pipeline check not run: {check.error}")

    peer_rows: list[PeerCount] = []
    if peers:
        begin("peers' counts")
        peer_rows = peer_counts()

    begin("done")
    seconds.pop("done", None)
    if quick:
        notes.append(
            f"quick mode: {QUICK_EPOCHS} epochs on the first {QUICK_TRAIN_SAMPLES:,} training "
            f"and {QUICK_TEST_SAMPLES:,} test samples (not trained to convergence), sweep over "
            f"emb {', '.join(map(str, emb_values))}"
        )
    return AssignmentResults(
        quick=quick,
        problem1=p1,
        problem2=p2,
        problem3=p3,
        pipeline=check,
        peers=peer_rows,
        our_counts=our_counts(p2.graphs),
        convention=tracer.CONVENTION,
        tool_version=tracer.TOOL_VERSION,
        torch_version=torch.__version__,
        seconds=seconds,
        notes=notes,
    )
