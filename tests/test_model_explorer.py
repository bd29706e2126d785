"""The Model Explorer export (flowprof.reports.model_explorer).

The format is checked two ways: here, against what the Model Explorer documentation and its web
app ask of a JSON graph (a collection with a label and graphs; unique node ids; edges from
existing nodes; node data keyed by node id); and, when ``ai-edge-model-explorer`` is installed,
by loading the files into its own dataclasses (``model_explorer.graph_builder`` and
``node_data_builder``) with dacite in strict mode, which refuses any unknown or mistyped field.
"""

from __future__ import annotations

import json

import pytest

import flowprof
from flowprof.reports import model_explorer as me


@pytest.fixture(scope="module")
def resnet18():
    return flowprof.trace("torchvision:resnet18")


@pytest.fixture(scope="module")
def transformer():
    return flowprof.trace("transformer")  # emb 256, 8 heads, ffn 1024, 1+1 layers, seq 128


# MACs by hand. resnet18 at 1x3x224x224: tests/test_peers.py derives 1,814,073,344.
# The transformer: an encoder layer has 4 projections 128 x 256 x 256, scores and context
# 8 heads x 128 x 128 x 32 each, and a feed-forward 2 x 128 x 256 x 1024; a decoder layer has
# two attentions and the feed-forward.
ATTENTION = 4 * 128 * 256 * 256 + 2 * 8 * 128 * 128 * 32
FFN = 2 * 128 * 256 * 1024
HAND_MACS = {
    "resnet18": 1_814_073_344,
    "transformer": (ATTENTION + FFN) + (2 * ATTENTION + FFN),
}
GROUP_MACS = {"transformer": ("encoder", ATTENTION + FFN), "resnet18": ("layer1", None)}


def _attrs(node):
    return {a["key"]: a["value"] for a in node["attrs"]}


@pytest.mark.parametrize("name", ["resnet18", "transformer"])
def test_graph_json_has_every_block_with_its_metrics(name, request):
    graph = request.getfixturevalue(name)
    data = json.loads(json.dumps(me.graph_json(graph, name)))
    assert data["label"] == name and len(data["graphs"]) == 1
    g = data["graphs"][0]
    nodes = {n["id"]: n for n in g["nodes"]}
    leaf = graph.by_block(None)
    assert list(nodes) == [b.name for b in leaf.blocks(include_io=True)]
    edges = [(e["sourceNodeId"], n["id"]) for n in g["nodes"] for e in n["incomingEdges"]]
    assert sorted(edges) == sorted((e.src, e.dst) for e in leaf.edges())
    for n in g["nodes"]:
        block = leaf.block(n["id"])
        a = _attrs(n)
        assert n["namespace"].count("/") == max(0, len(block.parents) - 1)  # one per module
        assert int(a["macs"]) == block.macs and int(a["params"]) == block.params
        assert (
            int(a["additions"]) == block.additions and int(a["bits_sent"]) == block.activation_bits
        )
        ids = [e["targetNodeInputId"] for e in n["incomingEdges"]]
        assert ids == [m["id"] for m in n["inputsMetadata"]]  # each edge's shape and bits
    assert sum(int(_attrs(n)["macs"]) for n in g["nodes"]) == HAND_MACS[name]
    group, macs = GROUP_MACS[name]
    assert group in g["groupNodeAttributes"]
    if macs is not None:
        assert int(g["groupNodeAttributes"][group]["macs"]) == macs


def test_namespaces_follow_the_module_hierarchy(transformer):
    g = me.graph_json(transformer)["graphs"][0]
    node = next(n for n in g["nodes"] if n["id"] == "decoder.layers.0.cross_attn.q_proj")
    assert node["namespace"] == "decoder/layers.0/cross_attn" and node["label"] == "q_proj"
    assert "decoder/layers.0/cross_attn" in g["groupNodeAttributes"]


@pytest.mark.parametrize("name", ["resnet18", "transformer"])
def test_node_data_has_a_value_on_every_block(name, request):
    graph = request.getfixturevalue(name)
    assert me.overlays(graph) == ["macs", "ops", "params", "bits"]  # no time: not measured
    blocks = {b.name: b for b in graph.by_block(None).blocks()}
    for metric in me.overlays(graph):
        data = me.node_data_json(graph, metric, name)
        results = data[name]["results"]
        assert set(results) == set(blocks), metric
        if metric == "macs":
            assert sum(r["value"] for r in results.values()) == HAND_MACS[name]
        if metric == "params":
            assert all(results[k]["value"] == b.params for k, b in blocks.items())
    with pytest.raises(ValueError, match="unknown metric"):
        me.node_data_json(graph, "joules")


@pytest.mark.parametrize("name", ["resnet18", "transformer"])
def test_model_explorer_loads_the_exports(name, request):
    graph_builder = pytest.importorskip(
        "model_explorer.graph_builder", reason="ai-edge-model-explorer is not installed"
    )
    node_data_builder = pytest.importorskip("model_explorer.node_data_builder")
    dacite = pytest.importorskip("dacite")
    strict = dacite.Config(strict=True)
    graph = request.getfixturevalue(name)
    collection = json.loads(json.dumps(me.graph_json(graph, name)))
    loaded = [dacite.from_dict(graph_builder.Graph, g, config=strict) for g in collection["graphs"]]
    (g,) = loaded
    assert len(g.nodes) == len(graph.by_block(None).blocks(include_io=True))
    assert all({"macs", "params", "bits_sent"} <= {a.key for a in n.attrs} for n in g.nodes)
    for metric in me.overlays(graph):
        data = json.loads(json.dumps(me.node_data_json(graph, metric, name)))
        (only,) = data.values()
        node_data = dacite.from_dict(node_data_builder.GraphNodeData, only, config=strict)
        assert set(node_data.results) <= {n.id for n in g.nodes}
        # and Model Explorer writes it back the same way
        again = json.loads(
            node_data_builder.ModelNodeData(graphsData={name: node_data}).to_json_string()
        )
        assert again[name]["results"] == only["results"]
