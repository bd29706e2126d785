"""The device model: what a chip can do per second, and where each figure comes from.

A :class:`Device` holds the ceilings the roofline (:mod:`flowprof.device.roofline`) divides by:
the peak rate of matrix products (conv, linear, matmul) per precision, the rate of the other
(elementwise) operations, and the memory bandwidth. GPUs come from their makers' datasheets
(:data:`GPUS`); this machine's CPU (and a CUDA device at hand) is measured by micro-benchmarks
(:mod:`flowprof.device.measure`), which also give the refinements: achieved rate by op size,
bandwidth by working-set size, and the fixed cost of each op call.

Only **dense** figures are listed. Datasheets print the 2:4 structured-sparsity figure first,
often with a footnote; it is exactly twice the dense one and applies only to weights pruned to
that pattern (Inductor's table, for one, lists the H100's bf16 peak as 1979 TFLOP/s, which is
the sparse figure). Units: FLOP/s (1 multiply-accumulate = 2 FLOPs) and bytes/s (1 TB/s =
1e12 bytes/s).

Imports nothing heavy: ``--help`` and a bad ``--device`` name stay fast.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flowprof.errors import BadSpecError

T = 1e12  # tera
G = 1e9  # giga

Curve = tuple[tuple[float, float], ...]  # (size, rate) points, sizes ascending


def interpolate(curve: Curve, size: float) -> float:
    """The rate at ``size`` on ``curve``: linear in log(size) between the two points around it,
    the end point's rate beyond either end (a micro-benchmark says nothing outside its range,
    and the nearest measured rate is the best guess there)."""
    if not curve:
        raise ValueError("empty curve")
    sizes = [s for s, _ in curve]
    if size <= sizes[0]:
        return curve[0][1]
    if size >= sizes[-1]:
        return curve[-1][1]
    i = bisect.bisect_right(sizes, size)
    (s0, r0), (s1, r1) = curve[i - 1], curve[i]
    w = (math.log(size) - math.log(s0)) / (math.log(s1) - math.log(s0))
    return r0 + w * (r1 - r0)


@dataclass(frozen=True)
class Device:
    """Ceilings of one chip, each figure with its source.

    ``matrix_flops``: precision (``fp32``, ``bf16`` ... as :class:`flowprof.Precision` names
    them) -> dense FLOP/s of matrix products; for fp32 on a GPU the CUDA-core figure, since
    PyTorch runs fp32 matmuls without TF32 unless told to (``tf32`` is listed beside it).
    ``vector_flops``: FLOP/s of the other ops (elementwise, reductions; the fp32 CUDA-core figure
    on a GPU). ``bandwidth``: bytes/s of main memory (HBM, GDDR, DRAM).

    The refinements are empty for a datasheet device and measured for a measured one:
    ``matrix_curves``: ``precision/op class`` (``fp32/matmul``, ``fp32/conv``) -> achieved FLOP/s
    by the op's FLOPs;
    ``bandwidth_curve``: achieved bytes/s by the bytes an op moves (small working sets run from
    cache); ``call_seconds``: the fixed cost of one block call (dispatch, interpreter, launch);
    ``op_seconds``: that of each further op the block calls.
    """

    name: str
    title: str
    kind: str  # "gpu" or "cpu"
    matrix_flops: Mapping[str, float]
    vector_flops: float
    bandwidth: float
    sources: tuple[str, ...]
    matrix_curves: Mapping[str, Curve] = field(default_factory=dict)
    bandwidth_curve: Curve = ()
    call_seconds: float = 0.0
    op_seconds: float = 0.0
    measured: Mapping[str, Any] = field(default_factory=dict)  # how and when it was measured

    def peak(self, precision: str) -> float:
        """Dense FLOP/s of matrix products at ``precision``; BadSpecError if not listed."""
        try:
            return self.matrix_flops[precision]
        except KeyError:
            known = ", ".join(self.matrix_flops)
            raise BadSpecError(
                f"device {self.name} has no figure for {precision} (it has: {known})"
            ) from None

    def matrix_rate(self, precision: str, op_class: str, flops: float) -> float:
        """FLOP/s a matrix product of ``flops`` FLOPs of ``op_class`` (``matmul``, ``conv``,
        ``bmm``; ``conv_backward`` ... for a backward's; ``conv@8`` for the ladder on 8 x 8
        images) is expected to reach at ``precision``: its measured curve (key
        ``precision/op_class``), else that of the main ladder of its class, else the forward's
        curve of that class, else the measured ``matmul`` curve, else the peak."""
        base = op_class.split("@")[0]  # (a ladder of another image size: conv@8)
        curve = (
            self.matrix_curves.get(f"{precision}/{op_class}")
            or self.matrix_curves.get(f"{precision}/{base}")
            or self.matrix_curves.get(f"{precision}/{base.removesuffix('_backward')}")
            or self.matrix_curves.get(f"{precision}/matmul")
        )
        return interpolate(curve, flops) if curve else self.peak(precision)

    def bandwidth_at(self, nbytes: float) -> float:
        """Bytes/s an op moving ``nbytes`` is expected to reach (the measured curve, else the
        peak)."""
        return interpolate(self.bandwidth_curve, nbytes) if self.bandwidth_curve else self.bandwidth

    def ridge(self, precision: str) -> float:
        """FLOPs per byte where the peak compute and bandwidth roofs meet."""
        return self.peak(precision) / self.bandwidth

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "kind": self.kind,
            "matrix_flops": dict(self.matrix_flops),
            "vector_flops": self.vector_flops,
            "bandwidth": self.bandwidth,
            "sources": list(self.sources),
            "matrix_curves": {k: [list(p) for p in v] for k, v in self.matrix_curves.items()},
            "bandwidth_curve": [list(p) for p in self.bandwidth_curve],
            "call_seconds": self.call_seconds,
            "op_seconds": self.op_seconds,
            "measured": dict(self.measured),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Device:
        return cls(
            name=d["name"],
            title=d["title"],
            kind=d["kind"],
            matrix_flops=dict(d["matrix_flops"]),
            vector_flops=float(d["vector_flops"]),
            bandwidth=float(d["bandwidth"]),
            sources=tuple(d["sources"]),
            matrix_curves={
                k: tuple((float(s), float(r)) for s, r in v)
                for k, v in d.get("matrix_curves", {}).items()
            },
            bandwidth_curve=tuple((float(s), float(r)) for s, r in d.get("bandwidth_curve", ())),
            call_seconds=float(d.get("call_seconds", 0.0)),
            op_seconds=float(d.get("op_seconds", 0.0)),
            measured=dict(d.get("measured", {})),
        )


# --- GPUs from their datasheets (dense figures; the sparse ones are twice these) -----------------

_A100 = (
    "NVIDIA A100 Tensor Core GPU datasheet (A100 80GB SXM column): FP64 9.7, FP64 Tensor 19.5, "
    "FP32 19.5, TF32 156, BF16/FP16 312 TFLOPS, INT8 624 TOPS (dense; the sparse figures printed "
    "beside them with an asterisk are twice these); GPU memory bandwidth 2,039 GB/s",
    "NVIDIA A100 Tensor Core GPU Architecture whitepaper (2020), Table 1",
)
_H100 = (
    "NVIDIA H100 Tensor Core GPU datasheet (H100 SXM column): FP64 34, FP64 Tensor 67, FP32 67, "
    "TF32 989, BF16/FP16 1,979, FP8 3,958 TFLOPS, INT8 3,958 TOPS, each footnoted 'with "
    "sparsity': dense = half (494.7, 989.4, 1,978.9); GPU memory bandwidth 3.35 TB/s",
    "NVIDIA H100 Tensor Core GPU Architecture whitepaper (2022), Table 3 (H100 SXM5, dense "
    "column: 494.7 TF32, 989.4 FP16/BF16, 1,978.9 FP8 TFLOPS)",
)
_H200 = (
    "NVIDIA H200 Tensor Core GPU datasheet (H200 SXM column): FP64 34, FP64 Tensor 67, FP32 67, "
    "TF32 989, BF16/FP16 1,979, FP8 3,958 TFLOPS, INT8 3,958 TOPS, each footnoted 'with "
    "sparsity': dense = half; GPU memory 141 GB, bandwidth 4.8 TB/s",
    "same GH100 compute as the H100 SXM (H100 architecture whitepaper, Table 3)",
)
_L4 = (
    "NVIDIA L4 Tensor Core GPU datasheet: FP32 30.3 TFLOPS; TF32 120, BF16/FP16 242, FP8 485 "
    "TFLOPS and INT8 485 TOPS, each footnoted 'with sparsity': dense = half (60, 121, 242.5); "
    "GPU memory bandwidth 300 GB/s",
)
_RTX4090 = (
    "NVIDIA Ada Lovelace GPU Architecture whitepaper (v2.1), Appendix A, GeForce RTX 4090: FP32 "
    "82.6; tensor TFLOPS dense/sparse: TF32 82.6/165.2, FP16 and BF16 with FP32 accumulate "
    "165.2/330.4 (what PyTorch's matmuls use; FP16 accumulate is twice that), FP8 with FP32 "
    "accumulate 330.3/660.6; INT8 660.6/1321.2 TOPS; memory bandwidth 1,008 GB/s",
)

GPUS: dict[str, Device] = {
    d.name: d
    for d in (
        Device(
            "a100",
            "NVIDIA A100 SXM4 80 GB",
            "gpu",
            {
                "fp64": 19.5 * T,
                "fp32": 19.5 * T,
                "tf32": 156 * T,
                "fp16": 312 * T,
                "bf16": 312 * T,
                "int8": 624 * T,
            },  # fmt: skip
            vector_flops=19.5 * T,
            bandwidth=2039 * G,
            sources=_A100,
        ),
        Device(
            "h100",
            "NVIDIA H100 SXM5 80 GB",
            "gpu",
            {
                "fp64": 67 * T,
                "fp32": 67 * T,
                "tf32": 494.7 * T,
                "fp16": 989.4 * T,
                "bf16": 989.4 * T,
                "fp8": 1978.9 * T,
                "int8": 1978.9 * T,
            },  # fmt: skip
            vector_flops=67 * T,
            bandwidth=3350 * G,
            sources=_H100,
        ),
        Device(
            "h200",
            "NVIDIA H200 SXM 141 GB",
            "gpu",
            {
                "fp64": 67 * T,
                "fp32": 67 * T,
                "tf32": 494.7 * T,
                "fp16": 989.4 * T,
                "bf16": 989.4 * T,
                "fp8": 1978.9 * T,
                "int8": 1978.9 * T,
            },  # fmt: skip
            vector_flops=67 * T,
            bandwidth=4800 * G,
            sources=_H200,
        ),
        Device(
            "l4",
            "NVIDIA L4 24 GB",
            "gpu",
            {
                "fp32": 30.3 * T,
                "tf32": 60 * T,
                "fp16": 121 * T,
                "bf16": 121 * T,
                "fp8": 242.5 * T,
                "int8": 242.5 * T,
            },  # fmt: skip
            vector_flops=30.3 * T,
            bandwidth=300 * G,
            sources=_L4,
        ),
        Device(
            "rtx4090",
            "NVIDIA GeForce RTX 4090 24 GB",
            "gpu",
            {
                "fp32": 82.6 * T,
                "tf32": 82.6 * T,
                "fp16": 165.2 * T,
                "bf16": 165.2 * T,
                "fp8": 330.3 * T,
                "int8": 660.6 * T,
            },  # fmt: skip
            vector_flops=82.6 * T,
            bandwidth=1008 * G,
            sources=_RTX4090,
        ),
    )
}

MEASURED = ("cpu", "cuda")  # devices measured on this machine (flowprof.device.measure)


def names() -> list[str]:
    """Every name ``--device`` takes: the measured ones, then the datasheet GPUs."""
    return [*MEASURED, *GPUS]


def check_name(name: str) -> str:
    """``name`` lower-cased if it is a device; BadSpecError (one line) if not."""
    key = name.lower()
    if key not in names():
        raise BadSpecError(f"unknown device {name!r} (known: {', '.join(names())})")
    return key
