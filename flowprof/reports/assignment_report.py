"""The assignment's report as a :class:`~reports.document.Document`, built from the numbers of
:func:`analyses.assignment.run_assignment`.

Every sentence that states a number is an f-string over the results (nothing here is a number
typed by hand), each answer comes with its derivation and the command that reproduces it, and
figures are rendered here (matplotlib and Graphviz) into the document, which the caller renders
to HTML, Markdown or LaTeX and writes.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from flowprof.analyses import dws_mapping
from flowprof.analyses.assignment import (
    LENETS,
    PAPER_TEST_ERROR,
    PIPELINE_DEPTH,
    PIPELINE_MODEL,
    PIPELINE_OPTIONS,
    PIPELINE_STAGES,
    AssignmentResults,
    PeerCount,
)
from flowprof.reports.document import Attachment, Document, Figure, Paragraph, Section
from flowprof.reports.units import bits

REPORT_COMMAND = "python cli.py report --out out/report"
QUICK_REPORT_COMMAND = "python cli.py report --out out/report --quick"

_DISPLAY = {"lenet5": "LeNet-5", "lenet5-dws": "LeNet-5 (depthwise separable)"}


def _n(value: int) -> str:
    return f"{value:,}"


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _fraction(value: Fraction | None) -> str:
    if value is None:
        return "undefined"
    return _n(int(value)) if value.denominator == 1 else f"{float(value):,.2f}"


def _image(r: AssignmentResults) -> str:
    """The LeNets' input image size as traced, e.g. ``32x32``."""
    shape = r.problem2.graphs[LENETS[0]].meta["inputs"][0]["shape"]
    return "x".join(map(str, shape[-2:]))


def _sparse_tables(r: AssignmentResults) -> str:
    """The partially connected layers, e.g. ``c3 reads 60 of the 96 map pairs``."""
    return "; ".join(
        f"{conv.layer} reads {conv.connections} of the {conv.c_in * conv.c_out} map pairs"
        for conv in r.problem2.comparison.convs
        if not conv.dense
    )


def _options(options: dict[str, Any]) -> str:
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items())


# --- Problem 1 -----------------------------------------------------------------------------------


def _problem1(doc: Document, r: AssignmentResults) -> None:
    p1 = r.problem1
    sec = doc.section("Problem 1: convolution shapes")

    a = sec.section(f"(a) Layers mapping {p1.solve_input} to {p1.solve_output}")
    examples = p1.examples(2)
    a.paragraph(
        f"The solver enumerates every convolution and transposed convolution (kernel, stride, "
        f"padding, dilation, groups) that maps {p1.solve_input} to {p1.solve_output} within the "
        f"bounds {'; '.join(p1.solutions.bounds.describe())}. It finds "
        f"{len(p1.solutions)} configurations; two of them:"
    )
    a.bullets(
        [
            f"`{s.layer}`: {s.layer.out_channels} filters of {s.layer.kernel[0]}x"
            f"{s.layer.kernel[1]}x{s.input.channels}, stride {s.layer.stride[0]}, padding "
            f"{s.layer.padding[0]}, dilation {s.layer.dilation[0]}; weight tensor "
            f"{'x'.join(map(str, s.weight_shape))}, {_n(s.params)} parameters; "
            f"{s.height_formula}"
            for s in examples
        ]
    )
    a.bullets(list(p1.solutions.explanation))
    a.table(
        ("#", "layer", "kernel", "stride", "padding", "dilation", "weight", "params"),
        [
            (
                i,
                "transposed" if s.layer.transposed else "conv",
                f"{s.layer.kernel[0]}x{s.layer.kernel[1]}",
                s.layer.stride[0],
                s.layer.padding[0],
                s.layer.dilation[0],
                "x".join(map(str, s.weight_shape)),
                s.params,
            )
            for i, s in enumerate(p1.solutions.configs, start=1)
        ],
        f"Every configuration mapping {p1.solve_input} to {p1.solve_output}, simplest first",
    )
    a.command(f"python cli.py solve-conv --in {p1.solve_input} --out {p1.solve_output}")
    for kernel, sols in p1.kernels.items():
        k = a.section(f"Can {kernel} weights do it? {'Yes' if sols.possible else 'No'}")
        k.bullets(list(sols.explanation))
        k.command(
            f"python cli.py solve-conv --in {p1.solve_input} --out {p1.solve_output} "
            f"--kernel {kernel}"
        )

    b = sec.section("(b) The output of conv, conv, max-pool on 13x15x3")
    first = p1.steps[0]
    b.paragraph(
        f"Input {first.input} (height x width x channels). Each layer's output size per axis is "
        f"`{first.layer.symbolic_formula}` (n input size, k kernel, s stride, p padding, "
        "d dilation); a convolution's channels are its number of filters, pooling keeps them. "
        "Every shape is confirmed by running the real torch layer on a meta tensor."
    )
    rows = []
    for i, step in enumerate(p1.steps, start=1):
        weight = "-" if step.weight_shape is None else "x".join(map(str, step.weight_shape))
        rows.append((i, str(step.layer), str(step.input), str(step.output), weight, step.params))
    b.table(
        ("#", "layer", "input", "output", "weight (C_out, C_in, kh, kw)", "params"),
        rows,
        "Shape after each layer (H x W x C)",
    )
    lines = []
    for step in p1.steps:
        lines.append(f"{step.layer}:")
        lines.extend(f"  {f}" for f in step.formulas)
    b.math(lines)
    b.paragraph(
        f"**Answer:** the final output is **{p1.final_shape}** (height x width x channels)."
    )
    b.command(f"python cli.py shape {p1.input_shape} {' '.join(p1.layers)}")


# --- Problem 2 -----------------------------------------------------------------------------------


def _train_command(run: Any, quick: bool) -> str:
    c = run.config
    cmd = f"python cli.py train {c.model}"
    if quick:
        cmd += f" --epochs {c.epochs} --train-samples {c.train_samples}"
        cmd += f" --test-samples {c.test_samples}"
    return cmd


def _training_sentence(name: str, run: Any) -> str:
    last = run.final
    head = f"{_DISPLAY.get(name, name)} trained for {len(run.history)} epoch(s)"
    if run.converged is not None:
        c = run.converged
        head += (
            f" and converged at epoch {c.epoch} (the best test loss, {c.test_loss:.4f}; test "
            f"accuracy {_pct(c.test_acc)})"
        )
    elif run.stop_reason == "max_epochs":
        head += f" without converging within {run.config.max_epochs} epochs"
    elif run.stop_reason == "epochs":
        head += " (a fixed number of epochs, no convergence test)"
    wall = sum(h.seconds for h in run.history)
    text = (
        f"{head}. After the last epoch: test accuracy {_pct(last.test_acc)} (test error "
        f"{_pct(1 - last.test_acc)}), test loss {last.test_loss:.4f}, training accuracy "
        f"{_pct(last.train_acc)}. Training wall time: {wall:.1f} s ({wall / 60:.1f} min, "
        f"{len(run.history)} epochs of {_n(run.train_samples)} samples and a test pass each, "
        f"{run.threads} CPU thread(s))"
    )
    if getattr(run, "resumed_epochs", 0) >= len(run.history):
        text += "; reused from the checkpoint cache: configuration, code and data are unchanged"
    elif getattr(run, "resumed_epochs", 0):
        text += f"; the first {run.resumed_epochs} epoch(s) resumed from the checkpoint cache"
    return text + "."


def paper_comparison(run: Any) -> str:
    """LeNet-5's final test error beside the paper's."""
    error = 1 - run.final.test_acc
    verdict = "at or below" if error <= PAPER_TEST_ERROR + 0.0005 else "above"
    return (
        f"Test error {_pct(error)} on {_n(run.test_samples)} test digits after the last epoch; "
        f"the paper reports {_pct(PAPER_TEST_ERROR)} for LeNet-5 without distortions "
        f"(Section III.C): {verdict} the paper's 1.0% mark."
    )


def _recipe(c: Any, run: Any) -> str:
    """The training recipe, and where and why it differs from the paper's."""
    decay = f", multiplied by {c.lr_decay:g} after each epoch" if c.lr_decay != 1 else " (constant)"
    return (
        f"Training: {c.optimizer} optimizer, learning rate {c.lr:g}{decay}, batch size "
        f"{c.batch_size}, seed {c.seed}, {run.threads} CPU thread(s); criterion: "
        f"{run.loss_description()}. Stopping rule: {c.rule()}. The paper trained with "
        "stochastic diagonal Levenberg-Marquardt (per-sample updates, each weight's step scaled "
        "by an estimate of its curvature, a global step falling from 0.0005 to 0.00001 over 20 "
        "passes). Adam plays the same part, a per-weight step from running gradient statistics, "
        "with no second-order pass, and mini-batches keep the CPU busy; the step decays each "
        "epoch as the paper's does. The network itself is the paper's."
    )


def _training_section(sec: Section, name: str, run: Any, r: AssignmentResults) -> None:
    from flowprof.reports import training_plots

    sec.paragraph(_training_sentence(name, run))
    if name == LENETS[0]:
        sec.paragraph(paper_comparison(run))
    sec.table(
        ("epoch", "train loss", "train accuracy", "test loss", "test accuracy", "seconds"),
        [
            (
                h.epoch,
                f"{h.train_loss:.4f}",
                _pct(h.train_acc),
                f"{h.test_loss:.4f}",
                _pct(h.test_acc),
                f"{h.seconds:.1f}",
            )
            for h in run.history
        ],
        f"{_DISPLAY.get(name, name)}: loss and accuracy per epoch",
    )
    label = _DISPLAY.get(name, name)
    for metric in ("accuracy", "loss"):
        fig = training_plots.metric_figure(
            run.history, metric, f"{label}: {metric} vs epochs", run.converged_epoch
        )
        sec.add(
            Figure.from_matplotlib(
                fig, f"train-{name}-{metric}", f"{label}: {metric} vs epochs (train dashed)"
            )
        )
    sec.command(_train_command(run, r.quick))


def _problem2(doc: Document, r: AssignmentResults) -> None:
    from flowprof.reports import diagram, training_plots

    p2 = r.problem2
    sec = doc.section("Problem 2: LeNet-5 and its depthwise-separable twin")
    setup = sec.section("Data and training")
    first = p2.runs[LENETS[0]]
    c = first.config
    setup.paragraph(
        f"Data: {p2.source_description}. Used for training: {_n(p2.train_samples)} training and "
        f"{_n(p2.test_samples)} test samples, padded to {_image(r)} and normalised with the "
        f"training images' mean {first.mean:.4f} and standard deviation {first.std:.4f}."
    )
    setup.paragraph(_recipe(c, first))
    twin = p2.runs[LENETS[1]].config
    if twin.lr != c.lr:
        setup.paragraph(
            f"{_DISPLAY[LENETS[1]]} is trained the same way (same optimizer, schedule, batch, "
            f"criterion and stopping rule) except for its starting learning rate, {twin.lr:g}: "
            "Adam moves each weight by about the learning rate per step whatever the weight's "
            "size, and the paper's initialisation (uniform in +-2.4 / fan-in) starts the twin's "
            "pointwise weights about 25 times larger than LeNet-5's convolution weights (fan-ins "
            "of 1 to 16 instead of 25 to 400), so at LeNet-5's rate they learn about 25 times "
            "slower relative to their size."
        )
    if r.quick:
        setup.paragraph(
            "**Quick mode:** a small subset and a fixed, small number of epochs; the curves "
            f"show the start of training, not convergence (run `{REPORT_COMMAND}` for that)."
        )
    sparse = _sparse_tables(r)
    setup.paragraph(
        "The paper's LeNet-5 outputs RBF distances (lower is more likely): training minimises "
        "the criterion above, which rewards a small distance to the right class's code and "
        "large ones to the others. The twin replaces each convolution by a "
        "depthwise convolution (one filter per input map) and a pointwise 1x1 convolution that "
        "keeps the original's connection table" + (f" ({sparse})." if sparse else ".")
    )
    for i, name in enumerate(LENETS):
        part = "(a)" if i == 0 else "(b)"
        _training_section(sec.section(f"{part} {_DISPLAY[name]}"), name, p2.runs[name], r)

    both = sec.section("Both networks side by side")
    fig = training_plots.comparison_figure(
        {_DISPLAY[n]: p2.runs[n].history for n in LENETS},
        {_DISPLAY[n]: p2.runs[n].converged_epoch for n in LENETS},
    )
    both.add(Figure.from_matplotlib(fig, "train-comparison", "Accuracy and loss of both networks"))
    a, b = (p2.runs[n].final for n in LENETS)
    both.paragraph(
        f"Final test accuracy: {_pct(a.test_acc)} ({_DISPLAY[LENETS[0]]}) and {_pct(b.test_acc)} "
        f"({_DISPLAY[LENETS[1]]}), a difference of {100 * (b.test_acc - a.test_acc):+.2f} "
        "percentage points."
    )
    for name in LENETS:
        dot = diagram.dataflow(
            p2.graphs[name], title=f"{name} (depth 1, {p2.graphs[name].precision.value})"
        )
        both.add(
            Figure.from_graphviz(
                dot, f"dataflow-{name}", f"{_DISPLAY[name]}: blocks and the tensors between them"
            )
        )

    _problem2c(sec.section("(c) Multiplications and additions"), r)
    _problem2d(sec.section("(d) The mapping f from regular to depthwise-separable"), r)


def _problem2c(sec: Section, r: AssignmentResults) -> None:
    cmp = r.problem2.comparison
    a, b = cmp.model_a, cmp.model_b
    sec.paragraph(f"Counting convention: {r.convention}.")
    rows = []
    for row in [*cmp.rows, cmp.total]:
        cells: list[Any] = [f"**{row.name}**" if row is cmp.total else row.name]
        for side in (row.a, row.b):
            cells += ["-", "-"] if side is None else [side.multiplications, side.additions]
        cells += [_ratio(row.ratio("multiplications")), _ratio(row.ratio("additions"))]
        rows.append(tuple(cells))
    sec.table(
        ("layer", f"mult. {a}", f"add. {a}", f"mult. {b}", f"add. {b}", "mult. B/A", "add. B/A"),
        rows,
        f"Operations per layer (depth {cmp.depth}) for one {_image(r)} image; B/A = {b} / {a}",
    )
    ta, tb = cmp.total.a, cmp.total.b
    sec.paragraph(
        f"**Answer:** {a} computes {_n(ta.multiplications)} multiplications and "
        f"{_n(ta.additions)} additions per image; {b} computes {_n(tb.multiplications)} "
        f"multiplications and {_n(tb.additions)} additions: "
        f"{_ratio(cmp.total.ratio('multiplications'))} and "
        f"{_ratio(cmp.total.ratio('additions'))} times as many. Of these, "
        f"{_n(ta.macs)} and {_n(tb.macs)} are the multiply-accumulates of convolutions and "
        f"linear layers (the number most tools report); the rest are the subsampling, squashing "
        f"and RBF layers, which the two networks share. Other operations (comparisons, "
        f"nonlinearities, ...): {_n(ta.other)} and {_n(tb.other)}. Parameters: "
        f"{_n(ta.params)} and {_n(tb.params)}."
    )
    sec.command(f"python cli.py compare {a} {b}")
    if r.problem2.training_costs:
        _training_cost(sec, r)


def _training_cost(sec: Section, r: AssignmentResults) -> None:
    """(c) continued: what training each network cost, per step, per epoch and per run."""
    costs = r.problem2.training_costs
    a, b = (costs[n] for n in LENETS)
    rows: list[tuple[Any, ...]] = []

    def add(label: str, ca: Any, cb: Any) -> None:
        ratio_m = cb.multiplications / ca.multiplications if ca.multiplications else None
        ratio_a = cb.additions / ca.additions if ca.additions else None
        rows.append(
            (
                label,
                ca.multiplications,
                ca.additions,
                cb.multiplications,
                cb.additions,
                _ratio(ratio_m),
                _ratio(ratio_a),
            )
        )

    for phase in a.step.phases:
        add(
            f"one step ({a.batch} images): {phase.value}",
            a.step.phases[phase],
            b.step.phases[phase],
        )
    add(f"one step ({a.batch} images)", a.step.total, b.step.total)
    add(f"one epoch ({_n(a.samples)} images, {a.steps_per_epoch} steps)", a.epoch, b.epoch)
    if a.converged_epoch and b.converged_epoch:
        add(
            f"to convergence ({a.converged_epoch} and {b.converged_epoch} epochs)",
            a.run(a.converged_epoch),
            b.run(b.converged_epoch),
        )
    add(f"the whole run ({a.epochs} and {b.epochs} epochs)", a.run(), b.run())
    add(
        f"evaluation per epoch ({_n(a.eval_samples)} test images, forward)",
        a.eval_forward,
        b.eval_forward,
    )
    x, y = LENETS
    sec.table(
        ("training", f"mult. {x}", f"add. {x}", f"mult. {y}", f"add. {y}", "mult. B/A", "add. B/A"),
        rows,
        f"Operations of training both networks as the runs above ran them: forward, the "
        f"criterion, backward and the {r.problem2.runs[x].config.optimizer} update, in batches of "
        f"{a.batch}; B/A = {y} / {x}",
    )
    run_a, run_b = a.run(), b.run()
    sec.paragraph(
        f"**Training cost.** One training step of {x} on {a.batch} images (forward, the "
        "criterion, backward and the optimizer's update, each op as autograd and torch.optim "
        f"run it) takes {_n(a.step.total.multiplications)} multiplications and "
        f"{_n(a.step.total.additions)} additions; of {y}, {_n(b.step.total.multiplications)} and "
        f"{_n(b.step.total.additions)}. The backward costs {_ratio(_share(a, 'backward'))} and "
        f"{_ratio(_share(b, 'backward'))} times the forward (not a fixed 2: the first layer "
        "computes no input gradient). The whole runs took "
        f"{_n(run_a.multiplications)} and {_n(run_b.multiplications)} multiplications, "
        f"{_n(run_a.additions)} and {_n(run_b.additions)} additions."
    )
    sec.command(f"python cli.py compare {x} {y} --train")


def _share(cost: Any, phase: str) -> float | None:
    from flowprof.tracer import Phase

    fwd = cost.step.phases.get(Phase.FORWARD)
    other = cost.step.phases.get(Phase(phase))
    return other.total / fwd.total if fwd and other and fwd.total else None


def _problem2d(sec: Section, r: AssignmentResults) -> None:
    cmp = r.problem2.comparison
    sec.paragraph(
        "A regular convolution with C_in input maps, C_out output maps, K = k_h*k_w taps and M "
        "connections (M = C_in*C_out when dense) is replaced by a depthwise convolution (C_in "
        "filters of K taps, same stride, padding and dilation, so the same output size) and a "
        "pointwise convolution with the same connections. Counting both with the convention "
        "above, every count is P = N*H_out*W_out times a per-position count, so P cancels and "
        "y = f(x) depends only on the layer's channels, kernel and connections:"
    )
    sec.math(r.problem2.derivation_text, r.problem2.derivation_latex)
    rows = []
    for conv in cmp.convs:
        for check in conv.checks:
            rows.append(
                (
                    conv.layer,
                    conv.c_in,
                    conv.c_out,
                    conv.kernel_taps,
                    conv.connections,
                    conv.positions,
                    check.quantity.value,
                    check.x,
                    check.y,
                    _fraction(check.y_predicted),
                    check.formula,
                    "yes" if check.ok else "NO",
                )
            )
    sec.table(
        ("layer", "C_in", "C_out", "K", "M", "P", "quantity", "x", "y traced", "f(x)", "f", "ok"),
        rows,
        "f checked on each convolution: x and y are the traced counts, f(x) the prediction",
    )
    checks = [c for conv in cmp.convs for c in conv.checks]
    good = sum(c.ok for c in checks)
    bias = ", ".join(sorted({str(conv.biases.mode()) for conv in cmp.convs if conv.biases.mode()}))
    sec.paragraph(
        f"**Answer:** f predicts the traced count exactly in {good} of {len(checks)} cases "
        f"({len(cmp.convs)} convolutions x {len(checks) // max(len(cmp.convs), 1)} quantities; "
        f"bias configuration: {bias or 'mixed'})."
        + (
            ""
            if good == len(checks)
            else " The cases marked NO disagree: see `python cli.py compare` for the numbers."
        )
    )
    sec.command(f"python cli.py compare {cmp.model_a} {cmp.model_b}")
    _derived_f(sec.section("f derived by the tool from traces"), r)


def _derived_f(sec: Section, r: AssignmentResults) -> None:
    """2(d) continued: f as flowprof.formula derives it, beside the hand f."""
    d = r.problem2.derived_f
    if d is None:
        sec.paragraph("Not derived: see the notes at the end.")
        return
    cmp = r.problem2.comparison
    sec.paragraph(
        f"The same f, derived by `flowprof.formula` from {_n(d.traces)} concrete traces, for each "
        f"convolution of {cmp.model_a} and its twin in {cmp.model_b}: (1) in the networks' own "
        "dimension, the batch, the layer's count x and its twin's y are exact polynomials in "
        "the batch and their ratio is a constant (the output positions cancel), so y = c x; "
        "(2) for a dense layer, a layer under test with the layer's kernel, stride, padding, "
        "biases and input size and C_in, C_out free (the partially connected layer keeps its "
        "table: (1) only). The hand f is dws_mapping's at the layer's K (and its C_in, C_out "
        "and M in (1)); they agree when derived - hand cancels to 0 (sympy), checked here."
    )
    rows = []
    for layer in d.layers:
        for label, found in (("batch", layer.in_batch), ("C_in, C_out", layer.in_channels)):
            for f in found:
                rows.append(
                    (
                        layer.layer,
                        label,
                        f.quantity.value,
                        f"y = {f.derived}",
                        f"y = {f.hand}",
                        "yes" if f.agree else "NO",
                    )
                )
    sec.table(
        ("layer", "derived in", "quantity", "f derived from traces", "f by hand", "agree"),
        rows,
        "f derived by flowprof.formula beside the hand derivation",
    )
    checks = d.checks()
    good = sum(f.agree for f in checks)
    sec.paragraph(
        f"**Derived vs by hand:** the two agree in {good} of {len(checks)} cases "
        f"({len(d.layers)} convolutions; checked, not assumed)."
    )
    for factory in ("ConvUnderTest", "separable_under_test"):
        sec.command(
            f"python cli.py formula flowprof.analyses.dws_derived:{factory} --symbols c_in,c_out "
            "--input 1x1x32x32 --degree c_in=1,c_out=1"
        )


# --- Problem 3 -----------------------------------------------------------------------------------


def _problem3(doc: Document, r: AssignmentResults) -> None:
    from flowprof.reports import diagram

    p3 = r.problem3
    cfg = p3.config
    sec = doc.section("Problem 3: the transformer and its communication")
    impl = sec.section("The transformer")
    impl.paragraph(
        f"An encoder-decoder transformer written from scratch (models/transformer.py): "
        f"d_model (emb) {cfg.get('emb')}, {cfg.get('heads')} heads, d_ff {cfg.get('ffn')}, "
        f"{cfg.get('enc_layers')} encoder and {cfg.get('dec_layers')} decoder layer(s), source "
        f"and target length {cfg.get('src_len')}/{cfg.get('tgt_len')}, batch {cfg.get('batch')}, "
        f"{cfg.get('dtype')} everywhere. Its layers are checked against torch.nn.Transformer's "
        "in the test suite."
    )
    g1 = p3.graphs[1]
    total = g1.total()
    impl.paragraph(
        f"One forward pass: {_n(total.macs)} multiply-accumulates, {_n(total.multiplications)} "
        f"multiplications, {_n(total.additions)} additions and {_n(total.other)} other "
        f"operations; {_n(g1.params())} parameters."
    )
    deepest = max(p3.graphs)
    g = p3.graphs[deepest]
    impl.table(
        ("block", "kind", "MACs", "mult.", "add.", "other", "params", "sends"),
        [
            (
                b.name,
                b.kind,
                b.macs,
                b.multiplications,
                b.additions,
                b.other,
                b.params,
                bits(b.activation_bits),
            )
            for b in g.blocks()
        ],
        f"Blocks at depth {deepest}",
    )
    for depth in sorted(p3.graphs):
        dot = diagram.dataflow(
            p3.graphs[depth], title=f"transformer, depth {depth} ({p3.graphs[depth].precision})"
        )
        impl.add(
            Figure.from_graphviz(
                dot,
                f"dataflow-transformer-depth{depth}",
                f"The transformer at depth {depth}: blocks with their counts; edges with the "
                "tensor shape and its bits",
            )
        )
    impl.command(
        f"python cli.py trace transformer --emb {cfg.get('emb')} --heads {cfg.get('heads')} "
        f"--depth {deepest} --dtype fp16 --out out/transformer"
    )

    edges = sec.section(f"Bits between consecutive blocks (depth {deepest})")
    rows = [(e.src, e.dst, e.shape, e.dtype, e.elements, e.bits) for e in g.edges()]
    edges.table(("from", "to", "shape", "dtype", "elements", "bits"), rows)
    edge_bits = sum(e.bits for e in g.edges())
    edges.paragraph(
        f"{len(rows)} edges carry {_n(edge_bits)} bits ({bits(edge_bits)}) per forward pass at "
        f"emb {cfg.get('emb')}; at {g.precision.bits} bits per element an edge carrying a "
        f"B x T x E activation moves B*T*E*{g.precision.bits} bits."
    )
    _sweep_section(sec, r)


def _views(doc: Document, r: AssignmentResults) -> None:
    """One interactive HTML view per model, in ``views/`` beside the report."""
    from flowprof.reports.view import view_html

    sec = doc.section("Interactive views")
    sec.paragraph(
        "Each model as one self-contained HTML page (open it in a browser, no network needed): "
        "modules open and close, repeated layers fold into one node, every block shows its "
        "counts and every edge its shape and bits; search finds a block and the side panel "
        "gives its exact numbers. `python cli.py trace MODEL --view --out DIR` writes one."
    )
    graphs = {name: r.problem2.graphs[name] for name in LENETS}
    graphs["transformer"] = r.problem3.graphs[max(r.problem3.graphs)]
    for name, graph in graphs.items():
        title = _DISPLAY.get(name, name)
        page = view_html(graph, title).encode("utf-8")
        blocks = len(graph.by_block(None).blocks())
        sec.add(Attachment(title, f"views/{name}.html", page, f"{blocks} blocks"))


def _sweep_section(sec: Section, r: AssignmentResults) -> None:
    p3 = r.problem3
    sw = sec.section("Communication vs embedding size")
    if p3.sweep is None:
        sw.paragraph(f"The sweep could not run: {p3.sweep_error}.")
        return
    from flowprof.reports import sweep_plots

    s = p3.sweep
    values = s.values
    header = ("family", *(f"emb {v}" for v in values))
    rows = [(fam.value, *(bits(x) for x in s.series(fam))) for fam in s.families()]
    rows.append(("**all edges**", *(bits(x) for x in s.activation_series())))
    rows.append(("**weights**", *(bits(x) for x in s.weight_series())))
    sw.table(
        header,
        rows,
        f"Bits per forward pass by edge family ({s.dtype}; blocks: "
        f"{'leaf computing units' if s.depth is None else f'depth {s.depth}'})",
    )
    figs = sweep_plots.figures(s, p3.seq_sweep)
    captions = {
        "sweep_families": "Bits per edge family vs embedding size (log-log)",
        "sweep_totals": "Activation, weight and total bits vs embedding size",
        "sweep_seq_len": "The same at fixed emb, vs sequence length",
    }
    for stem, fig in figs.items():
        sw.add(Figure.from_matplotlib(fig, stem.replace("_", "-"), captions.get(stem, stem)))
    _law(sw, r)
    sw.paragraph("**Explanation** (generated from the numbers of the sweep):")
    sw.bullets(p3.explanation)
    if s.mismatches():
        sw.paragraph("Closed forms that disagree with the trace: " + "; ".join(s.mismatches()))
    emb = ",".join(map(str, values))
    sw.command(f"python cli.py sweep transformer --emb {emb} --heads 8 --dtype fp16")


def _law(sec: Section, r: AssignmentResults) -> None:
    """Problem 3(b)'s law as flowprof.formula derives it, checked at the sweep's points."""
    law = r.problem3.law
    if law is None:
        return
    f = law.formula
    held = ", ".join(f"{k} {v}" for k, v in law.held.items())
    options = ", ".join(f"{k} {v}" for k, v in r.problem3.sweep.options.items())
    lines = [f"activation bits = {law.activations}", f"weight bits = {law.weights}"]
    lines += [f"{name}: {expr}" for name, expr in law.families.items()]
    sec.paragraph(
        f"**The law, derived by the tool.** `flowprof.formula` fits the total bits and each edge "
        f"family's bits as exact polynomials in {law.variable} ({held or 'defaults'}; "
        f"{options or 'no other option'}, as the sweep) from {f.traces} concrete traces (checked "
        f"at {len(f.verified_at)} further random point(s)): bits per forward pass, in total and "
        "by edge family:"
    )
    sec.math(lines)
    if law.variable == "emb":
        c = f.crossover("weights", "activations", "emb")
        where = ", ".join(f"{k}={v}" for k, v in law.held.items())
        sec.paragraph(f"Solved analytically: {c.describe(where)}.")
    verdict = "equal" if law.agrees else f"{len(law.mismatches)} differ: {law.mismatches[0]}"
    sec.paragraph(
        f"Checked at {law.checked} points (every {law.variable} of the sweep, against its "
        f"concrete traces: activation bits, weight bits and each family's bits): {verdict}."
    )
    sweep_options = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in law.held.items())
    sec.command(
        f"python cli.py formula transformer --symbols {law.variable} {sweep_options} --heads 8 "
        "--dtype fp16 --totals"
    )


# --- pipeline, peers, run ------------------------------------------------------------------------


def _pipeline(doc: Document, r: AssignmentResults) -> None:
    check = r.pipeline
    if check is None:
        return
    sec = doc.section("Predicted vs measured communication on a real pipeline")
    command = (
        f"python cli.py pipeline {PIPELINE_MODEL} --stages {PIPELINE_STAGES} "
        f"{_options(PIPELINE_OPTIONS)} --depth {PIPELINE_DEPTH}"
    )
    if check.result is None:
        sec.paragraph(f"Not run: {check.error}.")
        sec.command(command)
        return
    res = check.result
    sec.paragraph(
        f"The {res.model} ({_options(check.options)}) cut into {res.world_size} stages (cuts "
        f"only between blocks at depth {check.depth}), each run by its own process; the stages "
        f"exchange tensors with torch.distributed ({res.backend} on {res.address}). Each cut's "
        "bytes are counted by the sending and the receiving process."
    )
    rows = [
        (
            f"{c.cut.index} | {c.cut.index + 1}",
            c.cut.after,
            c.cut.before,
            len(c.cut.values),
            c.predicted_bits,
            c.measured_bits,
            "yes" if c.agree else "NO",
        )
        for c in res.cuts
    ]
    sec.table(
        ("cut", "after", "before", "tensors", "predicted bits", "measured bits", "agree"),
        rows,
        "Bits per cut: predicted by the trace, measured on the wire (one micro-batch)",
    )
    agree = sum(c.agree for c in res.cuts)
    sec.paragraph(
        f"{agree} of {len(res.cuts)} cut(s) carry exactly the predicted bits; the split run's "
        f"output {'equals' if res.outputs_equal else 'differs from'} the single-process output "
        f"(largest difference {res.max_abs_diff:g}); {res.wall_seconds:.1f} s wall time."
    )
    try:
        from flowprof.reports.pipeline_tables import stages_diagram

        sec.add(
            Figure.from_graphviz(
                stages_diagram(res), "pipeline-stages", "The pipeline's stages and cuts"
            )
        )
    except ImportError:  # the diagram is optional; the table above is the check
        pass
    sec.command(command)


def _peer_relation(row: PeerCount, ours: dict[str, int]) -> str:
    macs = ours["macs"]
    if row.value is None:
        return row.note
    if row.value == macs:
        rel = "= flowprof's MACs"
    elif row.value == 2 * macs:
        rel = "= 2 x flowprof's MACs (FLOPs)"
    else:
        rel = f"= flowprof's MACs {row.value - macs:+,}"
    parts = [rel, row.note] if row.note else [rel]
    if row.params is not None:
        diff = row.params - ours["params"]
        same = "the same as flowprof" if not diff else f"flowprof {ours['params']:,}, {diff:+,}"
        parts.append(f"params {row.params:,} ({same})")
    return "; ".join(parts)


def _peers(doc: Document, r: AssignmentResults) -> None:
    if not r.peers:
        return
    sec = doc.section("Where the usual tools disagree")
    sec.paragraph(
        "What the tools people reach for report for the same two networks (random weights, one "
        f"{_image(r)} image). flowprof counts every operation by kind; the tools report one "
        "number, under different names."
    )
    rows = []
    for row in r.peers:
        ours = r.our_counts[row.model]
        rows.append(
            (
                row.tool,
                row.model,
                "-" if row.value is None else row.value,
                row.what,
                _peer_relation(row, ours),
            )
        )
    for name, ours in r.our_counts.items():
        rows.append(("**flowprof**", name, ours["macs"], "MACs", _ours(ours)))
    sec.table(("tool", "model", "number", "called", "relation"), rows)
    lines = []
    for tool in dict.fromkeys(p.tool for p in r.peers):
        mine = [p for p in r.peers if p.tool == tool and p.value is not None]
        if not mine:
            continue
        if all(p.value == r.our_counts[p.model]["macs"] for p in mine):
            lines.append(
                f"{tool} reports the multiply-accumulates of convolutions and linear layers "
                "only: it leaves out the subsampling layers, squashing functions and the RBF "
                "output that flowprof counts as multiplications, additions and other operations."
            )
        elif all(p.value == 2 * r.our_counts[p.model]["macs"] for p in mine):
            lines.append(f"{tool} reports FLOPs = 2 x MACs of matrix products and convolutions.")
        else:
            diffs = ", ".join(
                f"{p.model} {p.value - r.our_counts[p.model]['macs']:+,}" for p in mine
            )
            lines.append(f"{tool} differs from the multiply-accumulates by {diffs}.")
    if lines:
        sec.bullets(lines)


def _ours(ours: dict[str, int]) -> str:
    return (
        f"mult. {_n(ours['multiplications'])}, add. {_n(ours['additions'])}, other "
        f"{_n(ours['other'])}, params {_n(ours['params'])}"
    )


def _run_section(doc: Document, r: AssignmentResults) -> None:
    sec = doc.section("How this report was made")
    sec.paragraph(
        f"flowprof {r.tool_version}, torch {r.torch_version}; "
        f"{'quick mode' if r.quick else 'full run'}. Reproduce the whole report with:"
    )
    sec.command(QUICK_REPORT_COMMAND if r.quick else REPORT_COMMAND, "Command")
    if r.notes:
        sec.bullets(r.notes)
    sec.table(
        ("step", "seconds"),
        [(name, f"{s:.1f}") for name, s in r.seconds.items()],
        "Wall time per step",
    )


def _summary(doc: Document, r: AssignmentResults) -> None:
    p1, p2, p3 = r.problem1, r.problem2, r.problem3
    sec = doc.section("Answers at a glance")
    ex = p1.examples(2)
    cmp = p2.comparison
    rows: list[tuple[str, str]] = [
        ("1a", "; ".join(f"`{s.layer}` (weight {'x'.join(map(str, s.weight_shape))})" for s in ex)),
    ]
    for kernel, sols in p1.kernels.items():
        if sols.possible:
            answer = f"yes: {len(sols)} configuration(s), e.g. `{sols.configs[0].layer}`"
        else:
            answer = f"no: {sols.explanation[0]}"
        rows.append((f"1a, {kernel}", answer))
    rows.append(("1b", f"{p1.final_shape} (H x W x C)"))
    for part, name in zip(("2a", "2b"), LENETS, strict=True):
        run = p2.runs[name]
        if run.converged is not None:
            answer = (
                f"{name}: converged at epoch {run.converged.epoch} with test accuracy "
                f"{_pct(run.converged.test_acc)}; {_pct(run.final.test_acc)} after the last of "
                f"{len(run.history)} epochs"
            )
            if name == LENETS[0]:
                answer += f" (test error {_pct(1 - run.final.test_acc)}; the paper: 0.95%)"
        else:
            answer = (
                f"{name}: test accuracy {_pct(run.final.test_acc)} after {len(run.history)} "
                "epoch(s), not converged"
            )
        rows.append((part, answer))
    ta, tb = cmp.total.a, cmp.total.b
    rows.append(
        (
            "2c",
            f"{cmp.model_a}: {_n(ta.multiplications)} mult., {_n(ta.additions)} add.; "
            f"{cmp.model_b}: {_n(tb.multiplications)} mult., {_n(tb.additions)} add.",
        )
    )
    mul = dws_mapping.Quantity.MUL
    rows.append(
        (
            "2d",
            f"multiplications: y = {dws_mapping.formula_text(mul, 'none')}; dense: "
            f"y = {dws_mapping.formula_text(mul, 'none', dense=True)} (additions: see 2d)"
            + _derived_summary(p2.derived_f),
        )
    )
    if p3.sweep is not None:
        rows.append(("3", _sweep_summary(p3.sweep) + _law_summary(p3.law)))
    sec.table(("question", "answer"), rows)


def _law_summary(law: Any) -> str:
    if law is None:
        return ""
    at = ", ".join(f"{k} {v}" for k, v in law.held.items())
    verdict = "equal" if law.agrees else "**differ**"
    return (
        f" Law derived by flowprof.formula{f' at {at}' if at else ''}: activation bits = "
        f"{law.activations}, weight bits = {law.weights} (checked at {law.checked} points: "
        f"{verdict})."
    )


def _derived_summary(d: Any) -> str:
    if d is None:
        return ""
    checks = d.checks()
    good = sum(f.agree for f in checks)
    return f"; derived from traces by flowprof.formula: agrees with it in {good} of {len(checks)}"


def _sweep_summary(s: Any) -> str:
    """The sweep in two sentences: totals at both ends, which families grow and which do not."""
    from flowprof.analyses import comm_sweep

    first, last = s.values[0], s.values[-1]
    acts, weights = s.activation_series(), s.weight_series()
    text = (
        f"bits between blocks per forward pass: {bits(acts[0])} at emb {first} -> "
        f"{bits(acts[-1])} at emb {last}; weights {bits(weights[0])} -> {bits(weights[-1])}."
    )
    exponents = {f.value: comm_sweep.slope(s.values, s.series(f)) for f in s.families()}
    linear = [f for f, e in exponents.items() if e is not None and abs(e - 1) < 0.05]
    flat = [f for f, e in exponents.items() if e is not None and abs(e) < 0.05]
    if linear:
        text += f" Linear in emb: {', '.join(linear)}."
    if flat:
        text += f" Independent of emb: {', '.join(flat)}."
    w = comm_sweep.slope(s.values, weights)
    if w is not None:
        text += f" Weights grow as emb^{w:.2f}."
    return text


def build_report(results: AssignmentResults) -> Document:
    """The report of ``results`` (see the module docstring)."""
    r = results
    mode = "quick mode: small data, few epochs" if r.quick else "full run"
    doc = Document(
        "flowprof: the assignment, computed",
        f"E0294 Systems for Machine Learning, Assignment 2. Every number below is computed by "
        f"flowprof {r.tool_version} with torch {r.torch_version} ({mode}).",
    )
    command = QUICK_REPORT_COMMAND if r.quick else REPORT_COMMAND
    doc.lead.append(
        Paragraph(
            f"Generated by `{command}`. Each answer below gives its derivation and the command "
            "that reproduces it."
        )
    )
    _summary(doc, r)
    conv = doc.section("Conventions and data")
    conv.paragraph(f"Counting convention: {r.convention}.")
    conv.paragraph(
        "Bits on an edge = elements x the bit width of the accounted precision (fp16: 16 bits "
        "for every floating tensor; integer and boolean tensors keep their own width)."
    )
    conv.paragraph(
        f"MNIST: {r.problem2.source_description}. Used: {_n(r.problem2.train_samples)} training "
        f"and {_n(r.problem2.test_samples)} test samples"
        + (" (the first of each split: quick mode)." if r.quick else ".")
    )
    _problem1(doc, r)
    _problem2(doc, r)
    _problem3(doc, r)
    _views(doc, r)
    _pipeline(doc, r)
    _peers(doc, r)
    _run_section(doc, r)
    return doc
