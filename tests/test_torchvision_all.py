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
    # every parameter is in a block, or in a module an inference pass does not run (GoogLeNet's
    # and Inception v3's auxiliary classifiers are used in training only)
    total = sum(p.numel() for p in built.module.parameters())
    assert graph.params() + graph.meta["params_not_run"] == total
    aux = sum(p.numel() for n, p in built.module.named_parameters() if "aux" in n.lower())
    assert graph.meta["params_not_run"] == aux
    counts = graph.total()
    assert counts.macs > 0 and counts.multiplications >= counts.macs
    assert graph.total() == graph.by_block(1).total()
