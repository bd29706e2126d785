"""Every torchvision classification model traces, counts every op, and keeps every parameter;
so do its segmentation and video models (upsampling, 3-D convolutions, windowed attention)."""

from __future__ import annotations

import warnings

import pytest

from flowprof import tracer
from flowprof.models import registry

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


SEGMENTATION_AND_VIDEO = torchvision.models.list_models(
    module=torchvision.models.segmentation
) + torchvision.models.list_models(module=torchvision.models.video)


@pytest.mark.slow
@pytest.mark.parametrize("name", SEGMENTATION_AND_VIDEO)
def test_segmentation_and_video_models_trace_with_full_coverage(name):
    import torch

    video = name in torchvision.models.list_models(module=torchvision.models.video)
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        options = {} if video else {"weights_backbone": None}
        model = torchvision.models.get_model(name, weights=None, **options).eval()
    # video models take (N, C, T, H, W): 16 frames of 224 x 224 (what every one of them accepts)
    shape = (1, 3, 16, 224, 224) if video else (1, 3, 224, 224)
    graph = tracer.trace(model, [shape])
    assert graph.uncounted() == {} and graph.coverage() == 1.0
    assert graph.meta["untraceable_leaves"] == {}
    total = sum(p.numel() for p in model.parameters())
    assert graph.params() + graph.meta["params_not_run"] == total
    assert graph.total().macs > 0
