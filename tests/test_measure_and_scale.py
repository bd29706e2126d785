"""--measure agrees with the static analysis; a 4-billion-parameter model is traced on meta."""

from __future__ import annotations

import pytest
import torch

from flowprof import tracer
from flowprof.models import registry


def test_measure_agrees_with_the_static_figures():
    built = registry.build("lenet5", device="cpu")
    inputs = built.example_inputs("cpu", torch.Generator().manual_seed(0))
    static = tracer.trace(built.module, inputs)
    measured = tracer.trace(built.module, inputs, measure=True)
    assert measured.total() == static.total()
    edges = measured.edges()
    assert edges and all(e.measured_bits == e.native_bits for e in edges)
    # C1's output: 6 maps of 28x28 fp32 = 4704 elements * 32 bits = 150528 bits measured
    c1 = [e for e in edges if e.src == "c1.conv"]
    assert c1 and c1[0].measured_bits == 4704 * 32 == 150528
    assert all(b.seconds is not None and b.seconds >= 0 for b in measured.blocks())
    grouped = measured.by_block(1)
    assert all(b.seconds is not None for b in grouped.blocks())
    total = sum(b.seconds for b in measured.blocks())
    assert sum(b.seconds for b in grouped.blocks()) == pytest.approx(total)


def test_measure_needs_real_weights():
    built = registry.build("lenet5", device="meta")
    try:
        tracer.trace(built.module, built.example_inputs("meta"), measure=True)
    except tracer.UnsupportedModelError as exc:
        assert "real weights" in str(exc)
    else:
        raise AssertionError("measuring a meta model must fail clearly")


@pytest.mark.parametrize("hooks", [None, True], ids=["fx", "hooks"])
def test_four_billion_parameters_on_meta(hooks):
    # on both paths: the hooked one (models fx cannot trace) allocates nothing either
    built = registry.build("transformer", emb=12288, heads=96, seq_len=2048)
    assert all(p.device.type == "meta" for p in built.module.parameters())
    graph = tracer.trace(built.module, built.example_inputs("meta"), hooks=hooks)
    e, f = 12288, 4 * 12288
    attention = 4 * (e * e + e)  # q, k, v, out projections with biases
    ffn = e * f + f + f * e + e  # linear1 and linear2 with biases
    norm = 2 * e  # gain and shift
    encoder = attention + ffn + 2 * norm
    decoder = 2 * attention + ffn + 3 * norm
    assert graph.params() == encoder + decoder == 4_228_251_648
    # the residual stream into the encoder: 1 x 2048 x 12288 fp16 = 25165824 elements * 16 bits
    src = [edge for edge in graph.edges() if edge.src == "input:src"]
    assert src and all(edge.bits == 2048 * 12288 * 16 for edge in src)
    # MACs, L = 2048 tokens: encoder q/k/v/out 4 L E^2, scores and context 2 L^2 E, FFN 2 L E F;
    # decoder twice the attention (self and cross: 8 L E^2 + 4 L^2 E) and the FFN
    n = 2048
    macs = (4 * n * e * e + 2 * n * n * e + 2 * n * e * f) + (
        8 * n * e * e + 4 * n * n * e + 2 * n * e * f
    )
    assert graph.total().macs == macs == 8_967_891_714_048
