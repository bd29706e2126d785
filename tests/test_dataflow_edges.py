"""An edge carries the tensor its block reads, at the width it crosses at (issue 15, items 1-2).

Each model is traced on the fx path (``hooks=None``) and the hooked path (``hooks=True``); the
expected shapes, dtypes and bits are derived by hand in each test.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flowprof import tracer

PATHS = pytest.mark.parametrize("hooks", [None, True], ids=["fx", "hooks"])


def _edge(g: tracer.BlockGraph, src: str, dst: str) -> tuple[str, str, int, int]:
    e = g.graph.edges[src, dst]["edge"]
    return e.shape, e.dtype, e.elements, e.bits


# --- casts: the model's own choice of precision ------------------------------------------------


class Quantize(nn.Module):
    """A block whose output is cast to int8 (a quantised activation)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x).to(torch.int8)  # (4, 4) int8


@PATHS
@pytest.mark.parametrize("dtype", [None, "fp32", "fp16"])
def test_a_cast_to_int8_crosses_at_8_bits_whatever_the_accounted_precision(hooks, dtype):
    g = tracer.trace(Quantize(), [torch.randn(4, 4)], hooks=hooks, dtype=dtype)
    # what crosses is the int8 tensor: 16 elements * 8 bits = 128 bits (not 16*32 = 512 nor
    # 16*16 = 256, the width of the fp32 tensor it was cast from)
    assert _edge(g, "fc", "output:out") == ("4x4", "int8", 16, 128)
    # the model's input is in its own floating dtype: at the accounted precision
    width = {None: 32, "fp32": 32, "fp16": 16}[dtype]
    assert _edge(g, "input:x", "fc")[3] == 16 * width


class HalfBranches(nn.Module):
    """An fp32 model that casts two branches to fp16 and adds them in fp16."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x):
        return self.a(x).half() + self.b(x).half()  # (4, 4) fp16


@PATHS
@pytest.mark.parametrize("dtype", [None, "fp32", "fp8", "fp64"])
def test_a_cast_in_the_model_keeps_its_width_while_the_model_s_own_dtype_follows_dtype(
    hooks, dtype
):
    g = tracer.trace(HalfBranches(), [torch.randn(4, 4)], hooks=hooks, dtype=dtype)
    # each fp16 branch: 16 elements * 16 bits = 256, at every --dtype (the model chose fp16)
    assert _edge(g, "a", "add") == ("4x4", "fp16", 16, 256)
    assert _edge(g, "b", "add") == ("4x4", "fp16", 16, 256)
    assert _edge(g, "add", "output:out") == ("4x4", "fp16", 16, 256)
    # the fp32 input is the model's own dtype: 16 elements at --dtype's width (default fp32)
    bits = {None: 32, "fp32": 32, "fp8": 8, "fp64": 64}[dtype]
    name = dtype or "fp32"
    assert _edge(g, "input:x", "a") == ("4x4", name, 16, 16 * bits)
    # the block's activation bits count what it sends: the fp16 tensor
    assert g.block("a").activation_bits == 256


def test_regrouping_and_changing_the_precision_keep_the_rule():
    g = tracer.trace(HalfBranches(), [torch.randn(4, 4)])
    assert _edge(g.with_precision(tracer.Precision.FP8), "a", "add")[3] == 256  # 16 * 16
    assert _edge(g.with_precision(tracer.Precision.FP8), "input:x", "a")[3] == 128  # 16 * 8
    assert _edge(g.by_block(1), "a", "add")[3] == 256


# --- the tensor the block reads -----------------------------------------------------------------


class Upsample(nn.Module):
    """Nearest x2 upsampling (a copy: no operation counted) then bilinear x2."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        x = self.conv(x)  # (1, 4, 5, 6)
        x = F.interpolate(x, scale_factor=2, mode="nearest")  # (1, 4, 10, 12)
        return F.interpolate(x, scale_factor=2, mode="bilinear")  # (1, 4, 20, 24)


@PATHS
def test_the_edge_into_a_block_shows_the_upsampled_tensor_it_reads(hooks):
    g = tracer.trace(Upsample(), [torch.randn(1, 4, 5, 6)], hooks=hooks)
    # the bilinear block reads 1x4x10x12 = 480 elements * 32 bits = 15360 (not 1x4x5x6 = 120)
    assert _edge(g, "conv", "interpolate") == ("1x4x10x12", "fp32", 480, 15360)
    assert g.block("interpolate").input_shapes == ((1, 4, 10, 12),)
    assert _edge(g, "interpolate", "output:out") == ("1x4x20x24", "fp32", 1920, 61440)


class Broadcast(nn.Module):
    """A broadcast view and a repeating copy of the same 1x4 tensor, read by two adds."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.g = nn.Linear(4, 4)

    def forward(self, x, z):
        h = self.fc(x)  # (1, 4)
        w = self.g(z)  # (3, 4)
        viewed = torch.add(h.expand(3, 4), w)  # reads a view of h: h's data crosses
        copied = torch.mul(h.repeat(3, 1), w)  # reads a (3, 4) copy made on fc's side
        return viewed, copied


@PATHS
def test_a_broadcast_view_sends_its_source_and_a_repeated_copy_sends_itself(hooks):
    g = tracer.trace(Broadcast(), [torch.randn(1, 4), torch.randn(3, 4)], hooks=hooks)
    assert _edge(g, "fc", "add") == ("1x4", "fp32", 4, 128)  # 4 * 32
    assert _edge(g, "fc", "mul") == ("3x4", "fp32", 12, 384)  # 12 * 32
    assert _edge(g, "g", "add") == ("3x4", "fp32", 12, 384)


class ZeroState(nn.Module):
    """A recurrent-style state made with ``x.new_zeros``: it reads none of x's data."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(4, 4)
        self.cell = nn.Linear(8, 8)

    def forward(self, x):
        y = self.enc(x)  # (2, 4)
        h = y.new_zeros(2, 8)  # (2, 8), a constant of y's dtype and device
        return self.cell(h), y


@PATHS
def test_a_state_made_with_new_zeros_is_not_charged_to_the_edge_from_its_template(hooks):
    g = tracer.trace(ZeroState(), [torch.randn(2, 4)], hooks=hooks)
    edges = {(e.src, e.dst) for e in g.edges()}
    assert edges == {("input:x", "enc"), ("enc", "output:out"), ("cell", "output:out")}
    assert g.block("cell").input_shapes == ()  # it reads a constant only
    assert _edge(g, "enc", "output:out") == ("2x4", "fp32", 8, 256)
