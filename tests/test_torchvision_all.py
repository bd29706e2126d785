"""Every torchvision classification model traces, counts every op, and keeps every parameter."""

from __future__ import annotations

import warnings

import pytest

import tracer
from models import registry

torchvision = pytest.importorskip("torchvision")
NAMES = torchvision.models.list_models(module=torchvision.models)


def test_there_are_many():
    assert len(NAMES) >= 80


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_traces_with_full_coverage(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = registry.build(f"torchvision:{name}")
    graph = tracer.trace(built.module, built.example_inputs("meta"))
    assert graph.uncounted() == {} and graph.coverage() == 1.0
    assert graph.meta["untraceable_leaves"] == {}
    assert graph.params() == sum(p.numel() for p in built.module.parameters())
    total = graph.total()
    assert total.macs > 0 and total.multiplications >= total.macs
    assert graph.total() == graph.by_block(1).total()
