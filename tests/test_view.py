"""The HTML view (flowprof.reports.view) and the module tree under it (reports.hierarchy).

Browser tests open the page in headless Chromium and work it through its own controls (clicks on
the + buttons and headers, typing in the search box, the depth buttons), then compare what the
page shows with the BlockGraph and with counts written out by hand.
"""

from __future__ import annotations

import json
import time

import pytest

import flowprof
from flowprof.reports.hierarchy import hierarchy
from flowprof.reports.view import view_data, view_html
from flowprof.tracer.counts import OpCount
from tests.chromium import needs_chromium, run_page
from tests.llama_shaped import LlamaShape, llama_shaped

SMALL_LLAMA = LlamaShape(hidden=256, layers=4, heads=8, mlp=688, vocab=1000)


@pytest.fixture(scope="module")
def transformer():
    return flowprof.trace("transformer", enc_layers=2, dec_layers=2)  # emb 256, seq 128, fp16


@pytest.fixture(scope="module")
def resnet50():
    return flowprof.trace("torchvision:resnet50")  # 1x3x224x224, fp32


@pytest.fixture(scope="module")
def llama():
    model, ids = llama_shaped(SMALL_LLAMA, seq=32)
    return flowprof.trace(model, [ids])


# --- the tree, without a browser ----------------------------------------------------------------


def _leaf_sum(graph, key):
    """Counts and parameters of the leaf blocks inside module call ``key``, summed here."""
    leaves = [b for b in graph.by_block(None).blocks() if key in b.parents or b.name == key]
    return OpCount.sum(b.count for b in leaves), sum(b.params for b in leaves)


@pytest.mark.parametrize("name", ["transformer", "resnet50", "llama"])
def test_every_module_adds_up_to_its_leaves(name, request):
    graph = request.getfixturevalue(name)
    h = hierarchy(graph)
    root = h.nodes[0]
    assert root.count == graph.total() and root.params == graph.params()
    assert root.leaves == len(graph.by_block(None).blocks(include_io=True))
    for n in h.nodes[1:]:
        if n.role == "group":
            assert (n.count, n.params) == _leaf_sum(graph, n.key), n.key
        elif n.role == "fold":
            copies = [h.nodes[c] for c in n.children]
            assert n.copies == len(copies) >= 2
            assert n.count == copies[0].count.scale(n.copies), n.key
            assert n.params == copies[0].params * n.copies


def test_repeated_layers_fold(llama, resnet50, transformer):
    top = [n.key for n in (hierarchy(llama).nodes[c] for c in hierarchy(llama).nodes[0].children)]
    assert top == ["input:input_ids", "embed_tokens", "layers.0-3", "norm", "lm_head", "output:out"]
    h = hierarchy(resnet50)
    layer1 = next(n for n in h.nodes if n.key == "layer1")
    # layer1.0 has the downsampling shortcut; layer1.1 and layer1.2 are the same Bottleneck
    assert [h.nodes[c].key for c in layer1.children] == ["layer1.0", "layer1.1-2"]
    layer3 = next(n for n in h.nodes if n.key == "layer3")
    assert [h.nodes[c].key for c in layer3.children] == ["layer3.0", "layer3.1-5"]
    h = hierarchy(transformer)
    encoder = next(n for n in h.nodes if n.key == "encoder")
    assert [h.nodes[c].key for c in encoder.children] == ["encoder.layers.0-1"]
    assert hierarchy(resnet50, fold=False).nodes[0].count == resnet50.total()


def test_view_data_is_json_and_the_page_is_self_contained(transformer):
    data = view_data(transformer)
    assert json.loads(json.dumps(data)) == data
    page = view_html(transformer, "t")
    assert "</script" not in page.split('id="flowprof-data">')[1].split("</script>")[0]
    for needle in ("src=", "href=", "@import", "url(http", "fetch("):
        assert needle not in page, needle  # nothing loaded from elsewhere
    assert "Copyright (c) 2012-2014 Chris Pettitt" in page  # dagre's licence kept


# --- the browser ---------------------------------------------------------------------------------

# Works the page as a person would, and records what it shows after each step.
DRIVER = """
const r = {initial: fp.shown()};
const open = %(open)s;
for (const key of open) fp.click(fp.node(key).querySelector(".toggle"));
r.opened = fp.shown();
r.openClusters = fp.clusters();
fp.click(fp.cluster(open[0]).querySelector(".header"));
r.closed = fp.shown();
const box = document.getElementById("search");
fp.type(box, %(query)s);
r.results = [...document.querySelectorAll("#results li[data-id]")].map(
  (li) => li.firstChild.textContent);
fp.key(box, "Enter");
r.found = fp.node(%(target)s) !== null;
r.selected = [...document.querySelectorAll("#viewport .node.selected")].map((n) => n.dataset.key);
r.detailName = fp.detailName();
r.numbers = fp.numbers();
fp.click(fp.node(%(target)s));
r.numbersAgain = fp.numbers();
const metric = document.getElementById("metric");
metric.value = "params";
metric.dispatchEvent(new Event("change", {bubbles: true}));
r.fills = Object.fromEntries([...document.querySelectorAll("#viewport .node")].map(
  (n) => [n.dataset.key, n.querySelector("rect.box").getAttribute("fill")]));
fp.click(document.getElementById("folds"));
r.depths = {};
for (const b of document.querySelectorAll("#depths button")) {
  fp.click(b);
  r.depths[b.dataset.depth] = {shown: fp.shown(), edges: fp.edges()};
}
return r;
"""

CASES = {
    # name: (modules to open, query, block it finds, hand counts of that block)
    "transformer": (
        ["encoder", "encoder.layers.0-1"],
        "cross_attn.q_proj",
        "decoder.layers.0.cross_attn.q_proj",
        # nn.Linear(256, 256) on 128 positions: 128 x 256 dot products of length 256, + bias
        {
            "macs": 128 * 256 * 256,
            "multiplications": 128 * 256 * 256,
            "additions": 128 * 256 * 255 + 128 * 256,
            "params": 256 * 256 + 256,
            "param_bits": (256 * 256 + 256) * 16,
        },
    ),
    "resnet50": (
        ["layer3", "layer3.1-5"],
        "layer3.4.conv2",
        "layer3.4.conv2",
        # 3x3 conv, 256 -> 256 channels at 14x14, no bias: 14*14*256 outputs x 256*9 taps
        {
            "macs": 14 * 14 * 256 * 256 * 9,
            "multiplications": 14 * 14 * 256 * 256 * 9,
            "additions": 14 * 14 * 256 * (256 * 9 - 1),
            "params": 256 * 256 * 9,
            "param_bits": 256 * 256 * 9 * 32,
        },
    ),
    "llama": (
        ["layers.0-3", "layers.2"],
        "layers.2.mlp.down_proj",
        "layers.2.mlp.down_proj",
        # Linear(688, 256), no bias, 32 positions: 32 x 256 dot products of length 688
        {
            "macs": 32 * 256 * 688,
            "multiplications": 32 * 256 * 688,
            "additions": 32 * 256 * 687,
            "params": 688 * 256,
            "param_bits": 688 * 256 * 16,
        },
    ),
}


def _top_names(graph):
    return [b.name for b in graph.by_block(1).blocks(include_io=True)]


@pytest.mark.browser
@pytest.mark.slow
@needs_chromium
@pytest.mark.parametrize("name", list(CASES))
def test_view_in_chromium(name, request):
    graph = request.getfixturevalue(name)
    open_, query, target, hand = CASES[name]
    driver = DRIVER % {
        "open": json.dumps(open_),
        "query": json.dumps(query),
        "target": json.dumps(target),
    }
    r, console = run_page(view_html(graph, name), driver)
    assert "driver_error" not in r, r.get("driver_error")
    assert r["problems"] == [] and console == [], (r["problems"], console)

    # It starts at depth 1, repeats folded.
    top = _top_names(graph)
    if name == "llama":
        top = [n for n in top if not n.startswith("layers.")]
        top.insert(2, "layers.0-3")
    assert r["initial"] == top

    # Opening a module shows its members inside it; its header closes it again.
    assert set(r["openClusters"]) == set(open_)
    assert not set(open_) & set(r["opened"])
    inside = {
        "transformer": {"encoder.layers.0", "encoder.layers.1"},
        "resnet50": {"layer3.0", "layer3.1", "layer3.2", "layer3.3", "layer3.4", "layer3.5"},
        "llama": {
            "layers.0",
            "layers.1",
            "layers.2.input_layernorm",
            "layers.2.self_attn",
            "layers.2.post_attention_layernorm",
            "layers.2.mlp",
            "layers.3",
        },
    }[name]
    assert inside <= set(r["opened"])
    assert r["closed"] == r["initial"]

    # Search finds the block, opens what hides it, and selects it.
    assert target in r["results"]
    assert r["found"] and r["selected"] == [target] and r["detailName"] == target

    # The detail panel's numbers: by hand, and the BlockGraph's.
    numbers = r["numbers"]
    assert {k: numbers[k] for k in hand} == hand
    block = graph.by_block(None).block(target)
    assert numbers["macs"] == block.macs and numbers["additions"] == block.additions
    assert numbers["params"] == block.params and numbers["param_bits"] == block.param_bits
    assert numbers["activation_bits"] == block.activation_bits
    assert numbers["ops"] == block.count.total
    assert r["numbersAgain"] == numbers  # a click on the node shows the same

    # Colour by parameters: the shown node with the most parameters is the darkest.
    shown = {
        n.key: n
        for n in hierarchy(graph).nodes
        if n.key in r["fills"] and n.role not in ("input", "output")
    }
    heaviest = max(shown.values(), key=lambda n: n.params).key
    assert r["fills"][heaviest] == "rgb(110,155,215)"

    # Without folding, each depth button shows exactly graph.by_block(depth): the same blocks,
    # and edges carrying the same bits (the page regroups the tensors itself).
    assert r["depths"]
    for depth, seen in r["depths"].items():
        at = graph.by_block(int(depth))
        assert sorted(seen["shown"]) == sorted(b.name for b in at.blocks(include_io=True))
        expected = sorted((e.src, e.dst, e.bits) for e in at.edges())
        assert sorted(tuple(e) for e in seen["edges"]) == expected, depth


@pytest.mark.browser
@needs_chromium
def test_fold_detail_gives_totals_and_each_copy(llama):
    driver = """
    fp.click(fp.node("layers.0-3"));
    const r = {numbers: fp.numbers(), name: fp.detailName()};
    const cells = document.querySelectorAll("#numbers tr[data-key='macs'] td");
    r.each = [...cells].map((t) => t.textContent);
    return r;
    """
    r, console = run_page(view_html(llama), driver)
    assert r["problems"] == [] and console == []
    layer = llama.by_block(1).block("layers.0")
    assert r["name"] == "layers.0-3"
    assert r["numbers"]["macs"] == 4 * layer.macs
    assert r["numbers"]["params"] == 4 * layer.params
    assert r["each"] == [f"{4 * layer.macs:,}", f"{layer.macs:,}"]


# --- speed: Llama-2-7B's shape -------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
@needs_chromium
def test_7b_view_is_written_in_5_s_and_paints_in_2_s():
    model, ids = llama_shaped()  # hidden 4096, 32 layers, 32 heads, MLP 11008, vocab 32000
    graph = flowprof.trace(model, [ids])  # seq 2048, on meta
    start = time.perf_counter()
    page = view_html(graph, "Llama-2-7B shape")
    written = time.perf_counter() - start
    assert written < 5, written
    # The app stamps readyMs when the graph is in the DOM; the next frames paint it. (Headless
    # Chromium under a virtual-time budget does not always run animation frames: then readyMs
    # is the figure.)
    driver = """
    const frame = () => new Promise((ok) => requestAnimationFrame(() => ok(true)));
    const late = new Promise((ok) => setTimeout(() => ok(false), 1000));
    const framed = await Promise.race([frame().then(frame), late]);
    return {ready: Number(document.body.dataset.readyMs), framed, painted: performance.now(),
            shown: fp.shown()};
    """
    r, console = run_page(page, driver)
    assert r["problems"] == [] and console == []
    assert "layers.0-31" in r["shown"]
    assert r["ready"] < 2000, r
    if r["framed"]:
        assert r["painted"] < 2000, r
