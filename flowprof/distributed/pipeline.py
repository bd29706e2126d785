"""Run a partitioned model as a pipeline of processes (torch.distributed, gloo, loopback).

Stage ``s`` runs in process (rank) ``s``. Per micro-batch it receives from rank ``s - 1`` the values
of the cut before it, runs only its own fx nodes (views of received values are recomputed, free),
and sends to rank ``s + 1`` the values of the cut after it, its own and the ones it forwards. Every
tensor goes with ``dist.send`` / ``dist.recv`` in an order both ends derive from the same plan, so
no shapes or headers travel: what crosses a cut is exactly the activations. Each rank counts the
bytes of the tensors it passes to send and recv; rank 0 gathers the counts beside the predicted
bits of every cut. The last rank keeps the outputs, which must equal the single-process run's.

The parent builds the model once (fixed seed) and ships it, already built, to every process (a
subprocess of its own: no multiprocessing helper process outlives the run). They rendezvous at a
TCPStore the parent opened on 127.0.0.1 at a port the OS chose, and are always reaped: on
success, on a failure in any of them (the others are terminated), on timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from flowprof.distributed.partition import (
    ComputeMeasure,
    Cut,
    Dataflow,
    Partition,
    PartitionError,
    StagePlan,
    analyse,
    partition,
    stage_plans,
)
from flowprof.errors import PipelineError

ADDRESS = "127.0.0.1"
BACKEND = "gloo"

# Dtypes gloo's send/recv takes as they are; any other goes as its raw bytes viewed as uint8 (the
# byte count is the same, so the measurement is unchanged).
_NATIVE = {
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bool,
}


# --- values on the wire ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Wire:
    """How one value travels: its nesting (leaf indices) and each leaf's shape and dtype."""

    structure: Any  # int (a tensor leaf), or a tuple / list of structures
    leaves: tuple[tuple[tuple[int, ...], torch.dtype], ...]


def _wire_of(value: Any) -> _Wire:
    leaves: list[tuple[tuple[int, ...], torch.dtype]] = []

    def walk(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            leaves.append((tuple(v.shape), v.dtype))
            return len(leaves) - 1
        if isinstance(v, (tuple, list)):
            return type(v)(walk(x) for x in v)
        raise PartitionError(f"a value crossing a cut holds a {type(v).__name__}, not tensors")

    return _Wire(walk(value), tuple(leaves))


def _leaves(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    else:
        for v in value:
            yield from _leaves(v)


def _rebuild(structure: Any, leaves: list[torch.Tensor]) -> Any:
    if isinstance(structure, int):
        return leaves[structure]
    return type(structure)(_rebuild(s, leaves) for s in structure)


def _send(value: Any, dst: int) -> int:
    import torch.distributed as dist

    sent = 0
    for t in _leaves(value):
        t = t.detach().contiguous()
        if t.dtype not in _NATIVE:
            t = t.reshape(-1).view(torch.uint8)
        dist.send(t, dst)
        sent += t.nbytes
    return sent


def _recv(wire: _Wire, src: int) -> tuple[Any, int]:
    import torch.distributed as dist

    got, received = [], 0
    for shape, dtype in wire.leaves:
        if dtype in _NATIVE:
            buf = torch.empty(shape, dtype=dtype)
            dist.recv(buf, src)
            got.append(buf)
        else:
            numel = 1
            for d in shape:
                numel *= d
            buf = torch.empty(
                numel * torch.empty((), dtype=dtype).element_size(), dtype=torch.uint8
            )
            dist.recv(buf, src)
            got.append(buf.view(dtype).reshape(shape))
        received += buf.nbytes
    return _rebuild(wire.structure, got), received


# --- running one stage -------------------------------------------------------------------------


class _StageRunner:
    """Runs the fx nodes of one stage on what it received (and, on stage 0, the inputs)."""

    def __init__(self, gm: fx.GraphModule, plan: StagePlan) -> None:
        self.interp = fx.Interpreter(gm, garbage_collect_values=False)
        nodes = {n.name: n for n in gm.graph.nodes}
        missing = [n for n in (*plan.nodes, *plan.receive) if n not in nodes]
        if missing:
            raise PipelineError(f"stage {plan.index}: the traced graph lacks nodes {missing[:3]}")
        self.nodes = nodes
        self.plan = plan
        self.placeholders = [n.name for n in gm.graph.nodes if n.op == "placeholder"]

    def run(self, received: dict[str, Any], inputs: Sequence[Any] | None) -> dict[str, Any]:
        env: dict[fx.Node, Any] = {self.nodes[k]: v for k, v in received.items()}
        self.interp.env = env
        for name in self.plan.nodes:
            node = self.nodes[name]
            if node.op == "placeholder":
                if inputs is None:
                    raise PipelineError(f"stage {self.plan.index} has no model inputs")
                env[node] = inputs[self.placeholders.index(name)]
            else:
                env[node] = self.interp.run_node(node)
        return {n.name: v for n, v in env.items()}


def _graph_module(module: nn.Module) -> fx.GraphModule:
    from flowprof import tracer

    with tracer.eval_mode(module):
        return tracer.trace_structure(module, hooks=False).graph_module


def _dry_run(
    gm: fx.GraphModule, plans: Sequence[StagePlan], inputs: Sequence[Any]
) -> tuple[dict[str, _Wire], Any]:
    """All stages in this process, in order: the wire layout of every cut value, and the output."""
    wires: dict[str, _Wire] = {}
    carried: dict[str, Any] = {}
    output = None
    with torch.no_grad():
        for plan in plans:
            env = _StageRunner(gm, plan).run(
                {k: carried[k] for k in plan.receive}, inputs if plan.index == 0 else None
            )
            carried = {k: env[k] for k in plan.send}
            for k, v in carried.items():
                wires.setdefault(k, _wire_of(v))
            if plan.output is not None:
                output = env[plan.output]
    return wires, output


# --- the processes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    module: nn.Module
    plans: tuple[StagePlan, ...]
    wires: dict[str, _Wire]
    predicted_bits: tuple[int, ...]  # per cut
    micro_batches: int
    port: int
    job_dir: str
    timeout_s: float
    ifname: str | None


def _loopback_ifname() -> str | None:
    """The loopback interface's name, so that gloo binds to it and nothing else."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return None
    return next((n for n in names if n.startswith("lo")), None)


# The command a stage process runs: put the parent's import path first, then run the stage.
_BOOTSTRAP = (
    "import sys; sys.path[:0] = sys.argv[3:]; "
    "from flowprof.distributed.pipeline import _worker_main; "
    "sys.exit(_worker_main(sys.argv[1], int(sys.argv[2])))"
)


def _worker_main(job_dir: str, rank: int) -> int:
    """A stage's process: errors are written for the parent, and the exit code is 1."""
    try:
        _die_with_parent()
        # The user's model files first: the model's classes are looked up by module name.
        from flowprof.models.registry import load_files

        load_files(json.loads(Path(job_dir, "files.json").read_text()))
        # Our own files, in a directory only this user can read; only rank 0 reads the inputs.
        job: _Job = torch.load(Path(job_dir, "job.pt"), weights_only=False)
        inputs = torch.load(Path(job_dir, "inputs.pt"), weights_only=False) if rank == 0 else None
        _stage_main(rank, job, inputs)
    except BaseException:
        _write_error(job_dir, rank)
        return 1
    return 0


def _write_error(job_dir: str, rank: int) -> None:
    """The traceback for the parent; the first one a rank writes is its root cause."""
    path = Path(job_dir, f"rank{rank}.error")
    if not path.exists():
        path.write_text(traceback.format_exc())


def _die_with_parent() -> None:
    """On Linux, ask for SIGTERM when the parent dies, so a killed parent leaves no stage behind
    (elsewhere the stages still end, at the latest when their communication times out)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _stage_main(rank: int, job: _Job, inputs: Sequence[Sequence[Any]] | None) -> None:
    import torch.distributed as dist

    if job.ifname:
        os.environ["GLOO_SOCKET_IFNAME"] = job.ifname
    torch.set_num_threads(1)  # the stages share the machine's cores
    world = len(job.plans)
    timeout = timedelta(seconds=job.timeout_s)
    store = dist.TCPStore(ADDRESS, job.port, world, is_master=False, timeout=timeout)
    dist.init_process_group(BACKEND, store=store, rank=rank, world_size=world, timeout=timeout)
    try:
        plan = job.plans[rank]
        job.module.eval()  # as the single-process reference ran
        runner = _StageRunner(_graph_module(job.module), plan)
        sent: list[list[int]] = []  # per micro-batch, per value
        received: list[list[int]] = []
        outputs = []
        compute_s = comm_s = 0.0
        with torch.no_grad():
            for mb in range(job.micro_batches):
                start = time.perf_counter()
                got: dict[str, Any] = {}
                counts = []
                for name in plan.receive:
                    got[name], n = _recv(job.wires[name], rank - 1)
                    counts.append(n)
                received.append(counts)
                mid = time.perf_counter()
                env = runner.run(got, inputs[mb] if inputs is not None else None)
                end = time.perf_counter()
                sent.append([_send(env[name], rank + 1) for name in plan.send])
                comm_s += (mid - start) + (time.perf_counter() - end)
                compute_s += end - mid
                if plan.output is not None:
                    outputs.append(env[plan.output])
        mine = {
            "rank": rank,
            "sent": sent,
            "received": received,
            "compute_s": compute_s,
            "comm_s": comm_s,
        }
        gathered: list[Any] | None = [None] * world if rank == 0 else None
        dist.gather_object(mine, gathered, dst=0)
        if rank == 0:
            assert gathered is not None
            cuts = []
            for k, bits in enumerate(job.predicted_bits):
                cuts.append(
                    {
                        "cut": k,
                        "predicted_bits": bits,
                        "sent": gathered[k]["sent"],
                        "received": gathered[k + 1]["received"],
                    }
                )
            stages = [{k: g[k] for k in ("rank", "compute_s", "comm_s")} for g in gathered]
            summary = {"cuts": cuts, "stages": stages}
            Path(job.job_dir, "measured.json").write_text(json.dumps(summary))
        if rank == world - 1:
            torch.save(outputs, Path(job.job_dir, "outputs.pt"))
    except BaseException:
        # Written before the group is torn down: tearing it down resets the peers' links, and
        # their errors must come later than this one, the cause.
        _write_error(job.job_dir, rank)
        raise
    finally:
        dist.destroy_process_group()


def _reap(procs: Sequence[subprocess.Popen]) -> None:
    """Terminate what is still running, then kill what ignores it; wait for every process."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _first_error(job_dir: Path) -> str | None:
    """The earliest error a rank wrote (later ones are usually its peers losing the link)."""
    files = sorted(job_dir.glob("rank*.error"), key=lambda f: f.stat().st_mtime)
    if not files:
        logs = [f.read_text().strip() for f in sorted(job_dir.glob("rank*.log"))]
        last = [log.splitlines()[-1] for log in logs if log]
        return last[0] if last else None
    lines = [ln for ln in files[0].read_text().strip().splitlines() if ln.strip()]
    return f"{files[0].stem}: {lines[-1] if lines else 'failed'}"


def _launch(
    module: nn.Module,
    plans: tuple[StagePlan, ...],
    wires: dict[str, _Wire],
    predicted_bits: tuple[int, ...],
    batches: Sequence[Sequence[Any]],
    timeout_s: float,
) -> tuple[dict[str, Any], list[Any], int]:
    import torch.distributed as dist

    world = len(plans)
    with tempfile.TemporaryDirectory(prefix="flowprof-pipeline-") as tmp:
        job_dir = Path(tmp)
        # Port 0: the OS picks a free port; the processes connect to this store to rendezvous.
        store = dist.TCPStore(
            ADDRESS, 0, world, is_master=True, wait_for_workers=False,
            timeout=timedelta(seconds=timeout_s),
        )  # fmt: skip
        port = store.port
        job = _Job(
            module, plans, wires, predicted_bits, len(batches), port, tmp, timeout_s,
            _loopback_ifname(),
        )  # fmt: skip
        from flowprof.models.registry import loaded_files

        (job_dir / "files.json").write_text(json.dumps(loaded_files()))
        torch.save(job, job_dir / "job.pt")
        torch.save(list(batches), job_dir / "inputs.pt")
        paths = [os.path.abspath(p or os.getcwd()) for p in sys.path]
        procs: list[subprocess.Popen] = []
        try:
            for rank in range(world):
                with open(job_dir / f"rank{rank}.log", "wb") as log:
                    procs.append(
                        subprocess.Popen(
                            [sys.executable, "-c", _BOOTSTRAP, tmp, str(rank), *paths],
                            stdin=subprocess.DEVNULL,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                        )
                    )
            deadline = time.monotonic() + timeout_s
            while True:
                codes = [p.poll() for p in procs]
                if all(c == 0 for c in codes):
                    break
                if any(c not in (None, 0) for c in codes):
                    why = _first_error(job_dir) or f"a stage exited with code {codes}"
                    raise PipelineError(f"the pipeline failed: {why}")
                if time.monotonic() > deadline:
                    raise PipelineError(f"the pipeline did not finish within {timeout_s:g} s")
                time.sleep(0.05)
            measured = json.loads((job_dir / "measured.json").read_text())
            outputs = torch.load(job_dir / "outputs.pt", weights_only=True)
        finally:
            _reap(procs)
            del store
    return measured, outputs, port


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CutCheck:
    """A cut's predicted bits beside the bytes its two ranks counted, per micro-batch."""

    cut: Cut
    sent_bytes: tuple[int, ...]  # per micro-batch, counted by the sending rank
    received_bytes: tuple[int, ...]  # per micro-batch, counted by the receiving rank
    value_bytes: tuple[int, ...]  # per value of the first micro-batch, as sent

    @property
    def predicted_bits(self) -> int:
        return self.cut.bits

    @property
    def measured_bits(self) -> int:
        """8 x the bytes sent for one micro-batch (the largest, should they ever differ)."""
        return 8 * max(self.sent_bytes + self.received_bytes)

    @property
    def agree(self) -> bool:
        """Every micro-batch's sent and received bytes are exactly the predicted bits / 8."""
        return all(8 * b == self.predicted_bits for b in self.sent_bytes + self.received_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cut": self.cut.index,
            "after": self.cut.after,
            "before": self.cut.before,
            "predicted_bits": self.predicted_bits,
            "measured_bits": self.measured_bits,
            "sent_bytes": list(self.sent_bytes),
            "received_bytes": list(self.received_bytes),
            "agree": self.agree,
            "values": [
                v.to_dict() | {"measured_bits": 8 * b}
                for v, b in zip(self.cut.values, self.value_bytes, strict=True)
            ],
        }


@dataclass(frozen=True)
class PipelineResult:
    """A distributed run of a partition: what each cut carried, and whether the output matched."""

    model: str
    partition: Partition
    micro_batches: int
    cuts: tuple[CutCheck, ...]
    outputs_equal: bool
    max_abs_diff: float
    stage_seconds: tuple[tuple[float, float], ...]  # per rank: (compute, communication)
    wall_seconds: float
    port: int
    config: dict[str, Any] = field(default_factory=dict)
    backend: str = BACKEND
    address: str = ADDRESS

    @property
    def world_size(self) -> int:
        return len(self.partition.stages)

    @property
    def ok(self) -> bool:
        """Every cut agrees with its prediction and the output equals the single-process one."""
        return self.outputs_equal and all(c.agree for c in self.cuts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "config": dict(self.config),
            "backend": self.backend,
            "address": self.address,
            "port": self.port,
            "world_size": self.world_size,
            "micro_batches": self.micro_batches,
            "ok": self.ok,
            "outputs_equal": self.outputs_equal,
            "max_abs_diff": self.max_abs_diff,
            "wall_seconds": self.wall_seconds,
            "partition": self.partition.to_dict(),
            "cuts": [c.to_dict() for c in self.cuts],
            "stage_seconds": [
                {"rank": r, "compute": c, "communication": m}
                for r, (c, m) in enumerate(self.stage_seconds)
            ],
        }


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _compare(a: Any, b: Any) -> tuple[bool, float]:
    """Exact equality (NaNs in the same places count as equal) and the largest difference."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False, float("inf")
        same = bool(torch.isclose(a, b, rtol=0, atol=0, equal_nan=True).all())
        diff = (a.double() - b.double()).abs().nan_to_num(0.0).max() if a.numel() else 0
        return same, float(diff)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b):
        results = [_compare(x, y) for x, y in zip(a, b, strict=True)]
        return all(r[0] for r in results), max((r[1] for r in results), default=0.0)
    return a == b, 0.0


def run_partition(
    module: nn.Module,
    flow: Dataflow,
    part: Partition,
    batches: Sequence[Sequence[Any]],
    *,
    timeout_s: float = 120.0,
    config: dict[str, Any] | None = None,
) -> PipelineResult:
    """Run ``part`` of ``module`` across one process per stage on ``batches`` (micro-batches).

    ``flow`` is :func:`~distributed.partition.analyse` of the same module. Raises
    :class:`PipelineError` when a process fails or the run exceeds ``timeout_s``; no process is
    left behind either way.
    """
    if not batches:
        raise PartitionError("give at least one micro-batch")
    plans = stage_plans(flow, part)
    gm = _graph_module(module)
    with _threads(1), torch.no_grad(), _eval(module):
        wires, _ = _dry_run(gm, plans, batches[0])
        reference = [module(*b) for b in batches]
    start = time.perf_counter()
    predicted = tuple(c.bits for c in part.cuts)
    measured, outputs, port = _launch(module, plans, wires, predicted, batches, timeout_s)
    wall = time.perf_counter() - start
    checks = []
    for cut, m in zip(part.cuts, measured["cuts"], strict=True):
        checks.append(
            CutCheck(
                cut,
                tuple(sum(mb) for mb in m["sent"]),
                tuple(sum(mb) for mb in m["received"]),
                tuple(m["sent"][0]),
            )
        )
    equal, diff = _compare(list(reference), list(outputs))
    stage_seconds = tuple((s["compute_s"], s["comm_s"]) for s in measured["stages"])
    return PipelineResult(
        flow.name, part, len(batches), tuple(checks), equal, diff, stage_seconds, wall, port,
        dict(config or {}),
    )  # fmt: skip


@contextlib.contextmanager
def _eval(module: nn.Module) -> Iterator[None]:
    from flowprof.tracer import eval_mode

    with eval_mode(module):
        yield


def run_module_pipeline(
    module: nn.Module,
    batches: Sequence[Sequence[Any]],
    stages: int | None = None,
    *,
    cuts: Sequence[int | str] | None = None,
    name: str | None = None,
    depth: int | None = None,
    comm_weight: float = 1.0,
    measure: ComputeMeasure | str = ComputeMeasure.OPS,
    timeout_s: float = 120.0,
    config: dict[str, Any] | None = None,
) -> PipelineResult:
    """Partition ``module`` (traced on ``batches[0]``) and run it as a pipeline on ``batches``."""
    if not batches:
        raise PartitionError("give at least one micro-batch")
    flow = analyse(module, batches[0], name=name)
    part = partition(flow, stages, cuts=cuts, comm_weight=comm_weight, measure=measure, depth=depth)
    return run_partition(module, flow, part, batches, timeout_s=timeout_s, config=config)


def run_pipeline(
    model_name: str,
    stages: int | None = None,
    micro_batches: int = 1,
    model_options: dict[str, Any] | None = None,
    *,
    cuts: Sequence[int | str] | None = None,
    depth: int | None = None,
    comm_weight: float = 1.0,
    measure: ComputeMeasure | str = ComputeMeasure.OPS,
    input_shapes: Sequence[Sequence[int]] | None = None,
    input_dtypes: Sequence[str | None] | None = None,
    seed: int = 0,
    timeout_s: float = 120.0,
) -> PipelineResult:
    """Build model ``model_name`` (fixed ``seed``), cut it into ``stages`` and run the pipeline.

    Each of the ``micro_batches`` is one example input of the model (random, from ``seed``). Bad
    input (stage count, cut, option) raises a ValueError subclass with a one-line message; a
    failed or timed-out run raises :class:`PipelineError`.
    """
    from flowprof.models.registry import build

    if isinstance(micro_batches, bool) or not isinstance(micro_batches, int) or micro_batches < 1:
        raise PartitionError(f"--micro-batches must be a positive integer, got {micro_batches!r}")
    options = {k: v for k, v in (model_options or {}).items() if v is not None}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        built = build(
            model_name,
            device="cpu",
            input_shapes=input_shapes,
            input_dtypes=input_dtypes,
            **options,
        )
    generator = torch.Generator().manual_seed(seed)
    batches = [built.example_inputs("cpu", generator) for _ in range(micro_batches)]
    return run_module_pipeline(
        built.module,
        batches,
        stages,
        cuts=cuts,
        name=model_name,
        depth=depth,
        comm_weight=comm_weight,
        measure=measure,
        timeout_s=timeout_s,
        config=dict(built.config),
    )
