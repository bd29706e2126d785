"use strict";
// flowprof's HTML view: the module tree of a BlockGraph as a dataflow graph that opens and
// closes. Data: the JSON in #flowprof-data (flowprof/reports/view.py); layout: dagre.
(() => {
  const DATA = JSON.parse(document.getElementById("flowprof-data").textContent);
  const NODES = DATA.nodes;
  const K = Object.fromEntries(DATA.kinds.map((k, i) => [k, i]));
  const OTHER = DATA.kinds.filter((k) => !["macs", "multiplications", "additions"].includes(k));
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const viewport = $("viewport");
  const svg = $("graph");

  // --- numbers -------------------------------------------------------------------------------
  const exact = (n) => n.toLocaleString("en-US");
  function si(n, unit = "") {
    for (const [f, p] of [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
      if (Math.abs(n) >= f) {
        let s = (n / f).toPrecision(3);
        if (s.includes(".")) s = s.replace(/0+$/, "").replace(/\.$/, "");
        return `${s} ${p}${unit}`;
      }
    }
    return `${Number.isInteger(n) ? n : n.toPrecision(3)} ${unit}`.trim();
  }
  const ops = (c) => c[K.multiplications] + c[K.additions] + OTHER.reduce((s, k) => s + c[K[k]], 0);
  const seconds = (s) => (s >= 1 ? `${s.toPrecision(3)} s` : `${(s * 1e3).toPrecision(3)} ms`);

  const METRICS = {
    macs: { label: "MACs", of: (n) => n.counts[K.macs], show: (v) => si(v, "MAC") },
    ops: { label: "operations", of: (n) => ops(n.counts), show: (v) => si(v) },
    params: { label: "parameters", of: (n) => n.params, show: (v) => si(v) },
    bits: { label: "bits sent", of: (n) => n.activation_bits, show: (v) => si(v, "bit") },
    memory: {
      label: "memory",
      of: (n) => n.param_bits + n.activation_bits,
      show: (v) => si(v, "bit"),
    },
  };
  if (DATA.measured) {
    METRICS.time = { label: "measured time", of: (n) => n.seconds || 0, show: seconds };
  }

  // --- state ---------------------------------------------------------------------------------
  const expanded = new Set([0]); // open nodes (the model, index 0, is always open)
  let foldRepeats = true;
  let selected = -1;
  let metric = "macs";
  let depthShown = 1; // the depth button that is on (0: none, after a manual change)
  let view = null; // the current cut, edges and layout
  let transform = { x: 0, y: 0, k: 1 };

  const isOpen = (id) => id === 0 || expanded.has(id);
  const hasChildren = (id) => NODES[id].children.length > 0;
  const maxDepth = Math.max(1, ...NODES.filter((n) => n.children.length).map((n) => n.depth + 1));

  // The nodes shown: each leaf's representative is its outermost closed ancestor (or itself).
  function cut() {
    const rep = new Int32Array(NODES.length).fill(-1);
    const shown = [];
    const clusters = [];
    const stack = [[0, -1]];
    while (stack.length) {
      const [id, above] = stack.pop();
      let r = above;
      if (r < 0) {
        if (!hasChildren(id) || !isOpen(id)) {
          r = id;
          shown.push(id);
        } else if (id !== 0) {
          clusters.push(id);
        }
      }
      rep[id] = r;
      const ch = NODES[id].children;
      for (let i = ch.length - 1; i >= 0; i--) stack.push([ch[i], r]);
    }
    return { rep, shown, clusters };
  }

  // Edges between shown nodes, by flowprof.tracer.blocks.group's rule: each distinct value once
  // per pair; a slice dropped where its whole value crosses the same boundary.
  function edgesOf(rep) {
    const pairs = new Map();
    for (const [v, root, s, d] of DATA.crossings) {
      const a = rep[s];
      const b = rep[d];
      if (a === b) continue;
      const key = `${a}>${b}`;
      let p = pairs.get(key);
      if (!p) pairs.set(key, (p = { src: a, dst: b, vals: new Map() }));
      p.vals.set(v, root);
    }
    const out = [];
    for (const p of pairs.values()) {
      const whole = new Set([...p.vals].filter(([v, r]) => v === r).map(([v]) => v));
      const e = { src: p.src, dst: p.dst, bits: 0, elements: 0, shapes: [], measured: 0 };
      for (const [v, r] of p.vals) {
        if (v !== r && whole.has(r)) continue;
        const [bits, shape, elements, measured] = DATA.values[v];
        e.bits += bits;
        e.elements += elements;
        e.shapes.push(shape);
        e.measured = measured === null || e.measured === null ? null : e.measured + measured;
      }
      out.push(e);
    }
    return out;
  }

  function edgeHead(e) {
    if (e.shapes.length === 1) return e.shapes[0];
    if (new Set(e.shapes).size === 1) return `${e.shapes.length} × ${e.shapes[0]}`;
    return `${e.shapes.length} tensors`;
  }

  // --- measuring and labelling ---------------------------------------------------------------
  const ctx = document.createElement("canvas").getContext("2d");
  const FONT = 'system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif';
  function textWidth(text, bold = false, size = 11) {
    ctx.font = `${bold ? "600 " : ""}${size}px ${FONT}`;
    return ctx.measureText(text).width;
  }

  function nodeLines(id) {
    const n = NODES[id];
    if (n.role === "input" || n.role === "output") {
      return [n.label, (n.role === "input" ? n.outputs : n.inputs).join(", ")];
    }
    const name = n.copies ? `${n.label} ×${n.copies}` : n.label;
    const lines = [name, n.kind];
    const macs = n.counts[K.macs];
    if (macs) {
      lines.push(n.copies ? `${si(macs, "MAC")} (${si(macs / n.copies, "MAC")} each)` : si(macs, "MAC"));
    }
    const total = ops(n.counts);
    if (total) lines.push(`${si(total)} ops`);
    if (n.params) lines.push(`${si(n.params)} params`);
    if (n.seconds !== undefined) lines.push(seconds(n.seconds));
    return lines;
  }

  function clusterTitle(id) {
    const n = NODES[id];
    const parts = [n.copies ? `${n.label} ×${n.copies}` : n.label, n.kind];
    if (n.counts[K.macs]) parts.push(si(n.counts[K.macs], "MAC"));
    if (n.params) parts.push(`${si(n.params)} params`);
    return `− ${parts.join(" · ")}`;
  }

  // --- layout --------------------------------------------------------------------------------
  function layout() {
    const t0 = performance.now();
    const { rep, shown, clusters } = cut();
    const edges = edgesOf(rep);
    const g = new dagre.graphlib.Graph({ compound: true });
    g.setGraph({ rankdir: "TB", nodesep: 22, ranksep: 30, edgesep: 10, marginx: 20, marginy: 28 });
    g.setDefaultEdgeLabel(() => ({}));
    const parentOf = (id) => (NODES[id].parent > 0 ? NODES[id].parent : null);
    for (const id of clusters) g.setNode(id, {});
    for (const id of clusters) if (parentOf(id) !== null) g.setParent(id, parentOf(id));
    for (const id of shown) {
      const lines = nodeLines(id);
      const w = Math.max(...lines.map((l, i) => textWidth(l, i === 0)));
      const toggle = hasChildren(id) ? 22 : 0;
      g.setNode(id, { lines, width: Math.ceil(w) + 18 + toggle, height: lines.length * 14 + 10 });
      if (parentOf(id) !== null) g.setParent(id, parentOf(id));
    }
    for (const e of edges) {
      e.label = [edgeHead(e), si(e.bits, "bit")];
      const w = Math.max(...e.label.map((l) => textWidth(l, false, 10)));
      g.setEdge(e.src, e.dst, { width: Math.ceil(w) + 6, height: 26, labelpos: "r", labeloffset: 6, e });
    }
    dagre.layout(g);
    view = { rep, shown, clusters, edges, g, ms: performance.now() - t0 };
  }

  // --- drawing -------------------------------------------------------------------------------
  function el(tag, attrs = {}, parent = null) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  }

  function colour(t) {
    // #f4f7fb (0) to #6e9bd7 (1)
    const mix = (a, b) => Math.round(a + (b - a) * t);
    return `rgb(${mix(244, 110)},${mix(247, 155)},${mix(251, 215)})`;
  }

  function draw() {
    const { g, shown, clusters, edges } = view;
    viewport.textContent = "";
    const m = METRICS[metric];
    const values = shown.map((id) => (NODES[id].role === "block" || NODES[id].children.length ? m.of(NODES[id]) : 0));
    const top = Math.max(0, ...values);
    const scale = (v) => (top > 0 ? Math.log1p(v) / Math.log1p(top) : 0);
    const treeDepth = (id) => {
      let d = 0;
      for (let p = NODES[id].parent; p > 0; p = NODES[p].parent) d++;
      return d;
    };
    for (const id of [...clusters].sort((a, b) => treeDepth(a) - treeDepth(b))) {
      const c = g.node(id);
      const n = NODES[id];
      const grp = el("g", {
        class: `cluster${n.role === "fold" ? " fold" : ""}${id === selected ? " selected" : ""}`,
        "data-id": id,
        "data-key": n.key,
      }, viewport);
      el("rect", { class: "frame", x: c.x - c.width / 2, y: c.y - c.height / 2, width: c.width, height: c.height, rx: 6 }, grp);
      const header = el("g", { class: "header", "data-id": id }, grp);
      const title = el("text", { x: c.x - c.width / 2 + 6, y: c.y - c.height / 2 - 5 }, header);
      title.textContent = clusterTitle(id);
      el("title", {}, header).textContent = `close ${n.key}`;
    }
    const topBits = Math.max(1, ...edges.map((e) => e.bits));
    for (const e of edges) {
      const d = g.edge(e.src, e.dst);
      const grp = el("g", { class: "edge", "data-src": NODES[e.src].key, "data-dst": NODES[e.dst].key, "data-bits": e.bits }, viewport);
      const pts = d.points;
      let path = `M${pts[0].x},${pts[0].y}`;
      for (let i = 1; i < pts.length - 1; i++) {
        const mx = (pts[i].x + pts[i + 1].x) / 2;
        const my = (pts[i].y + pts[i + 1].y) / 2;
        path += ` Q${pts[i].x},${pts[i].y} ${i === pts.length - 2 ? `${pts[i + 1].x},${pts[i + 1].y}` : `${mx},${my}`}`;
      }
      if (pts.length === 2) path += ` L${pts[1].x},${pts[1].y}`;
      const width = 0.8 + 3.2 * (Math.log1p(e.bits) / Math.log1p(topBits));
      el("path", { class: "line", d: path, "stroke-width": width.toFixed(2), "marker-end": "url(#arrow)" }, grp);
      const lx = d.x - d.width / 2 + 3;
      const t = el("text", { x: lx, y: d.y - 2 }, grp);
      el("tspan", { x: lx, dy: 0 }, t).textContent = e.label[0];
      el("tspan", { x: lx, dy: 12 }, t).textContent = e.label[1];
      el("title", {}, grp).textContent =
        `${NODES[e.src].key} → ${NODES[e.dst].key}\n${e.shapes.join(" + ")}\n` +
        `${exact(e.elements)} elements, ${exact(e.bits)} bits`;
    }
    shown.forEach((id, i) => {
      const p = g.node(id);
      const n = NODES[id];
      const io = n.role === "input" || n.role === "output";
      const cls = ["node", io ? "io" : "", n.role === "fold" ? "fold" : "", id === selected ? "selected" : ""];
      const grp = el("g", {
        class: cls.filter(Boolean).join(" "),
        "data-id": id,
        "data-key": n.key,
        transform: `translate(${p.x - p.width / 2},${p.y - p.height / 2})`,
      }, viewport);
      el("rect", {
        class: "box",
        width: p.width,
        height: p.height,
        rx: io ? p.height / 2 : 5,
        fill: io ? "#f1f2f4" : colour(scale(values[i])),
      }, grp);
      p.lines.forEach((line, j) => {
        const t = el("text", { x: io ? p.width / 2 : 9, y: 16 + j * 14, "text-anchor": io ? "middle" : "start", class: j === 0 ? "name" : j === 1 ? "kind" : "" }, grp);
        t.textContent = line;
      });
      el("title", {}, grp).textContent = n.key;
      if (hasChildren(id)) {
        const tg = el("g", { class: "toggle", "data-id": id, transform: `translate(${p.width - 19},4)` }, grp);
        el("rect", { width: 15, height: 15, rx: 3 }, tg);
        el("text", { x: 7.5, y: 12 }, tg).textContent = "+";
        el("title", {}, tg).textContent = `open ${n.key}`;
      }
    });
    legend(top);
    $("status").textContent = `${shown.length} blocks, ${edges.length} edges shown · layout ${Math.round(view.ms)} ms`;
  }

  function legend(top) {
    const m = METRICS[metric];
    $("legend").innerHTML = "";
    const span = (text) => {
      const s = document.createElement("span");
      s.textContent = text;
      $("legend").appendChild(s);
    };
    span(`colour: ${m.label} 0`);
    const ramp = document.createElement("span");
    ramp.className = "ramp";
    ramp.style.background = `linear-gradient(to right, ${colour(0)}, ${colour(1)})`;
    $("legend").appendChild(ramp);
    const note = metric === "memory" ? " (parameter bits + bits sent)" : "";
    span(`${m.show(top)}${note}, log scale · edge width: bits`);
  }

  function applyTransform() {
    viewport.setAttribute("transform", `translate(${transform.x},${transform.y}) scale(${transform.k})`);
  }

  // The whole graph in the window; ``readable``: no smaller than a size labels can be read at,
  // top-aligned (a long chain then starts at its inputs and scrolls).
  function fit(readable = false) {
    const gr = view.g.graph();
    const box = svg.getBoundingClientRect();
    let k = Math.min(1.25, box.width / (gr.width || 1), box.height / (gr.height || 1));
    if (readable) k = Math.max(k, Math.min(0.8, box.width / (gr.width || 1)));
    const x = (box.width - gr.width * k) / 2;
    transform = { k, x, y: Math.max(0, (box.height - gr.height * k) / 2) };
    applyTransform();
  }

  // Re-layout, keeping ``anchor`` (a node id) where it was on the screen.
  function render(anchor = -1) {
    const before = anchor >= 0 && view ? positionOf(anchor) : null;
    layout();
    draw();
    const after = anchor >= 0 ? positionOf(anchor) : null;
    if (before && after) {
      transform.x += (before.x - after.x) * transform.k;
      transform.y += (before.y - after.y) * transform.k;
      applyTransform();
    }
    syncControls();
  }

  function positionOf(id) {
    for (let n = id; n >= 0; n = NODES[n].parent) {
      const p = view.g.node(n);
      if (p && p.x !== undefined) return { x: p.x, y: p.y - (p.height || 0) / 2 };
    }
    return null;
  }

  function centerOn(id) {
    const p = view.g.node(id);
    const box = svg.getBoundingClientRect();
    transform.k = Math.max(transform.k, 0.9);
    transform.x = box.width / 2 - p.x * transform.k;
    transform.y = box.height / 2 - p.y * transform.k;
    applyTransform();
  }

  // --- actions -------------------------------------------------------------------------------
  function toggle(id) {
    if (!hasChildren(id) || id === 0) return;
    if (expanded.has(id)) expanded.delete(id);
    else expanded.add(id);
    depthShown = 0;
    render(id);
  }

  function setDepth(d) {
    expanded.clear();
    expanded.add(0);
    NODES.forEach((n, id) => {
      if (n.role === "group" && n.depth < d) expanded.add(id);
      if (n.role === "fold" && !foldRepeats) expanded.add(id);
    });
    depthShown = d;
    render();
    fit(true);
  }

  function setFolds(on) {
    foldRepeats = on;
    NODES.forEach((n, id) => {
      if (n.role === "fold") {
        if (on) expanded.delete(id);
        else expanded.add(id);
      }
    });
    render();
    fit(true);
  }

  function reveal(id) {
    for (let p = NODES[id].parent; p > 0; p = NODES[p].parent) expanded.add(p);
    depthShown = 0;
    selected = id;
    render();
    centerOn(id);
    showDetail(id);
  }

  function select(id) {
    selected = id;
    for (const e of viewport.querySelectorAll(".selected")) e.classList.remove("selected");
    for (const e of viewport.querySelectorAll(`[data-id="${id}"]`)) {
      if (e.matches(".node, .cluster")) e.classList.add("selected");
    }
    showDetail(id);
  }

  function syncControls() {
    for (const b of $("depths").children) b.classList.toggle("on", Number(b.dataset.depth) === depthShown);
    $("folds").checked = foldRepeats;
  }

  // --- the detail panel ----------------------------------------------------------------------
  function showDetail(id) {
    const n = NODES[id];
    const panel = $("detail");
    panel.textContent = "";
    const add = (tag, text, cls) => {
      const e = document.createElement(tag);
      if (text !== undefined) e.textContent = text;
      if (cls) e.className = cls;
      panel.appendChild(e);
      return e;
    };
    add("h2", n.key || DATA.title).id = "detail-name";
    const sub = [n.kind, n.role === "fold" ? `${n.copies} identical copies` : n.role];
    if (n.path) sub.push(`module ${n.path}`);
    add("div", sub.join(" · "), "sub");
    if (hasChildren(id) && id !== 0) {
      const b = add("button", isOpen(id) ? "close" : "open");
      b.id = "detail-toggle";
      b.addEventListener("click", () => toggle(id));
    }
    const table = add("table");
    table.id = "numbers";
    const c = n.counts;
    const rows = [
      ["MACs", "macs", c[K.macs]],
      ["multiplications", "multiplications", c[K.multiplications]],
      ["additions", "additions", c[K.additions]],
      ...OTHER.filter((k) => c[K[k]]).map((k) => [k.replace("_", " "), k, c[K[k]]]),
      ["operations, all kinds", "ops", ops(c)],
      ["parameters", "params", n.params],
      ["parameter bits", "param_bits", n.param_bits],
      ["bits sent to other blocks", "activation_bits", n.activation_bits],
      ["memory: parameter + sent bits", "memory", n.param_bits + n.activation_bits],
      ["leaf blocks", "leaves", n.leaves],
    ];
    const each = n.copies || 1;
    if (each > 1) {
      const head = table.insertRow();
      head.innerHTML = "<th></th><td>total</td><td>each copy</td>";
    }
    for (const [label, key, value] of rows) {
      const tr = table.insertRow();
      tr.dataset.key = key;
      tr.dataset.value = String(value);
      tr.insertCell().outerHTML = `<th>${label}</th>`;
      tr.insertCell().textContent = exact(value);
      if (each > 1) tr.insertCell().textContent = exact(value / each);
    }
    if (n.seconds !== undefined) {
      const tr = table.insertRow();
      tr.dataset.key = "seconds";
      tr.dataset.value = String(n.seconds);
      tr.insertCell().outerHTML = "<th>measured time</th>";
      tr.insertCell().textContent = seconds(n.seconds);
    }
    const list = (title, items) => {
      if (!items || !items.length) return;
      add("h3", title);
      const ul = add("ul");
      for (const it of items) {
        const li = document.createElement("li");
        li.textContent = it;
        ul.appendChild(li);
      }
    };
    list("input shapes", n.inputs);
    list("output shapes", n.outputs);
    if (n.uncounted) list("uncounted ops", Object.entries(n.uncounted).map(([k, v]) => `${k} × ${v}`));
    if (view && view.shown.includes(id)) {
      const line = (e, other) => `${NODES[other].key}: ${e.shapes.join(" + ")}, ${exact(e.bits)} bits`;
      list("in (as shown)", view.edges.filter((e) => e.dst === id).map((e) => line(e, e.src)));
      list("out (as shown)", view.edges.filter((e) => e.src === id).map((e) => line(e, e.dst)));
    }
  }

  // --- search --------------------------------------------------------------------------------
  const results = $("results");
  let matches = [];
  let active = 0;

  function search(q) {
    q = q.trim().toLowerCase();
    results.textContent = "";
    if (!q) {
      results.hidden = true;
      return;
    }
    const rank = (n) => {
      const key = n.key.toLowerCase();
      if (key === q) return 0;
      if (n.label.toLowerCase() === q) return 1;
      if (key.startsWith(q)) return 2;
      if (key.includes(q)) return 3;
      return n.kind.toLowerCase().includes(q) ? 4 : 9;
    };
    matches = NODES.map((n, id) => [rank(n), id]).filter(([r, id]) => r < 9 && id > 0);
    matches.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    active = 0;
    matches.slice(0, 50).forEach(([, id], i) => {
      const li = document.createElement("li");
      li.dataset.id = id;
      li.className = i === 0 ? "active" : "";
      li.innerHTML = "<span></span> <small></small>";
      li.firstChild.textContent = NODES[id].key;
      li.lastChild.textContent = NODES[id].kind;
      results.appendChild(li);
    });
    if (!matches.length) results.innerHTML = "<li>no block matches</li>";
    else if (matches.length > 50) {
      const li = document.createElement("li");
      li.textContent = `… ${matches.length - 50} more`;
      results.appendChild(li);
    }
    results.hidden = false;
  }

  function pick(id) {
    results.hidden = true;
    reveal(id);
    for (const e of viewport.querySelectorAll(".hit")) e.classList.remove("hit");
  }

  $("search").addEventListener("input", (ev) => search(ev.target.value));
  $("search").addEventListener("keydown", (ev) => {
    const items = [...results.querySelectorAll("li[data-id]")];
    if (ev.key === "Enter" && items.length) pick(Number(items[active].dataset.id));
    else if (ev.key === "Escape") results.hidden = true;
    else if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      if (!items.length) return;
      items[active].classList.remove("active");
      active = (active + (ev.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
      items[active].classList.add("active");
      ev.preventDefault();
    }
  });
  results.addEventListener("click", (ev) => {
    const li = ev.target.closest("li[data-id]");
    if (li) pick(Number(li.dataset.id));
  });

  // --- pointer: select, open and close, pan and zoom -----------------------------------------
  let drag = null;
  svg.addEventListener("pointerdown", (ev) => {
    drag = { x: ev.clientX, y: ev.clientY, tx: transform.x, ty: transform.y, moved: false };
  });
  svg.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const dx = ev.clientX - drag.x;
    const dy = ev.clientY - drag.y;
    if (!drag.moved && Math.hypot(dx, dy) < 4) return;
    if (!drag.moved) svg.setPointerCapture(ev.pointerId);
    drag.moved = true;
    svg.classList.add("dragging");
    transform.x = drag.tx + dx;
    transform.y = drag.ty + dy;
    applyTransform();
  });
  const endDrag = () => {
    svg.classList.remove("dragging");
    setTimeout(() => (drag = null), 0);
  };
  svg.addEventListener("pointerup", endDrag);
  svg.addEventListener("pointercancel", endDrag);
  svg.addEventListener("click", (ev) => {
    if (drag && drag.moved) return;
    const t = ev.target.closest(".toggle, .header, .node");
    if (!t) return;
    const id = Number(t.dataset.id);
    if (t.matches(".toggle, .header")) toggle(id);
    else select(id);
  });
  svg.addEventListener("dblclick", (ev) => {
    const t = ev.target.closest(".node");
    if (t && hasChildren(Number(t.dataset.id))) toggle(Number(t.dataset.id));
  });
  svg.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const box = svg.getBoundingClientRect();
    const px = ev.clientX - box.left;
    const py = ev.clientY - box.top;
    const k = Math.min(4, Math.max(0.02, transform.k * Math.exp(-ev.deltaY * 0.0015)));
    transform.x = px - ((px - transform.x) * k) / transform.k;
    transform.y = py - ((py - transform.y) * k) / transform.k;
    transform.k = k;
    applyTransform();
  }, { passive: false });

  // --- start ---------------------------------------------------------------------------------
  $("title").textContent = DATA.title;
  document.title = `${DATA.title} · flowprof view`;
  const tc = DATA.totals.counts;
  $("totals").textContent =
    `${si(tc[K.macs], "MAC")} · ${si(ops(tc))} ops · ${si(DATA.totals.params)} params · ` +
    `${exact(DATA.totals.blocks)} blocks · bits at ${DATA.precision}`;
  for (let d = 1; d <= maxDepth; d++) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = d === maxDepth ? `${d} (all)` : String(d);
    b.dataset.depth = d;
    b.addEventListener("click", () => setDepth(d));
    $("depths").appendChild(b);
  }
  for (const [key, m] of Object.entries(METRICS)) {
    const o = document.createElement("option");
    o.value = key;
    o.textContent = m.label;
    $("metric").appendChild(o);
  }
  $("metric").addEventListener("change", (ev) => {
    metric = ev.target.value;
    draw();
  });
  $("folds").addEventListener("change", (ev) => setFolds(ev.target.checked));
  $("fit").addEventListener("click", () => fit());
  render();
  fit(true);
  document.body.dataset.readyMs = performance.now().toFixed(1); // the graph is in the DOM
  requestAnimationFrame(() =>
    requestAnimationFrame(() => (document.body.dataset.firstPaintMs = performance.now().toFixed(1))),
  );
})();
