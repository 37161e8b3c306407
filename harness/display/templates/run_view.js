// The run browser (persona-eval view): draws a run's items from the JSON data element.
//
// Every string of the run goes into the page through textContent (or new Option), never as
// markup, so a persona or response holding a script tag shows as those characters. Only one
// page of items is in the DOM at a time, and filtering walks flat per-criterion outcome
// strings (one letter per item), so a 10,000-item run loads and filters in milliseconds.
// window.runView.timings holds what load and each filter change took (performance.now()),
// for the tests and for anyone who wants to know.
(function () {
  "use strict";

  var started = performance.now();
  var D = JSON.parse(document.getElementById("run-data").textContent);
  var parsed = performance.now();
  var items = D.items;
  var N = items.id.length;
  var criteria = D.criteria;
  var ORDER_TEXT = ["A = baseline, B = test", "A = test, B = baseline"];
  var OUTCOME_TEXT = { w: "win", l: "loss", t: "tie", u: "unscored", "-": "not judged" };
  var OUTCOME_LONG = { w: "win (test)", l: "loss (baseline)", t: "tie", u: "unscored", "-": "not judged" };
  var state = { choice: 0, outcome: "", criterion: -1, terms: [], page: 0, size: 20, matches: [] };
  var haystacks = {};  // judge set index -> lower-cased text per item, built on the first search
  var timings = { parse: parsed - started, script: 0, load: 0, filter: null, filters: [] };

  function $(id) { return document.getElementById(id); }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // Text from the run: its own direction (RTL stays RTL without flipping the layout).
  function textBlock(tag, className, text) {
    var node = el(tag, className, text);
    node.dir = "auto";
    return node;
  }

  function column(name, i) {
    var value = items[name];
    return Array.isArray(value) ? value[i] : value;
  }

  // -- judges, summary --------------------------------------------------------------------

  function choice() { return D.choices[state.choice]; }

  function countsFromCodes(codes) {
    var counts = { w: 0, l: 0, t: 0, u: 0, "-": 0 };
    for (var i = 0; i < codes.length; i++) counts[codes[i]] += 1;
    return counts;
  }

  function tile(parent, label, value, ci, detail, className) {
    var box = el("div", "tile" + (className ? " " + className : ""));
    box.appendChild(el("div", "tile-label", label));
    box.appendChild(el("div", "tile-value", value));
    if (ci) box.appendChild(el("div", "tile-ci", ci));
    if (detail) box.appendChild(el("div", "tile-detail", detail));
    parent.appendChild(box);
    return box;
  }

  function renderSummary() {
    var ch = choice();
    var s = ch.summary;
    var root = $("summary");
    root.textContent = "";
    var head = el("p", "summary-head");
    head.appendChild(el("strong", null, ch.name));
    head.appendChild(document.createTextNode(" · verdicts from " + ch.where));
    root.appendChild(head);
    var strip = el("div", "strip");
    root.appendChild(strip);
    if (!s) {
      criteria.forEach(function (name, c) {
        var n = countsFromCodes(ch.outcomes[c]);
        tile(strip, name, n.w + " W · " + n.l + " L · " + n.t + " T · " + n.u + " U", null,
          "counted from the records (no results.json for this judge)");
      });
      return;
    }
    s.criteria.forEach(function (row) {
      tile(strip, row.name + " win rate", row.rate, row.ci, row.wins + " W · " + row.losses + " L · " + row.ties +
        " T · " + row.unscored + " U");
    });
    var paper = tile(strip, "dPQ (paper)" + (s.headline === "dpq" ? " · headline" : ""), s.dpq.value, s.dpq.ci, null,
      "dpq" + (s.headline === "dpq" ? " headline" : ""));
    paper.id = "dpq-tile";
    if (s.weighted) {
      var w = s.weighted;
      var detail = w.criteria.map(function (r) { return r.name + " " + r.rate + (r.ci ? " " + r.ci : ""); }).join("; ");
      var weighted = tile(strip, "weighted dPQ" + (s.headline === "weighted_dpq" ? " · headline" : ""), w.value, w.ci, detail,
        "dpq" + (s.headline === "weighted_dpq" ? " headline" : ""));
      weighted.id = "weighted-tile";
      if (w.method) weighted.title = w.method;  // the method is long: a tooltip, and in the line below the strip
    }
    tile(strip, "items", String(s.items), null, null);
    if (s.weighted && s.weighted.method) root.appendChild(textBlock("p", "health", "weighted dPQ: " + s.weighted.method));
    if (s.health) root.appendChild(textBlock("p", "health", "judge health: " + s.health));
    if (s.voting) root.appendChild(el("p", "health", s.voting));
  }

  function fillSelects() {
    var judge = $("judge-select");
    D.choices.forEach(function (ch, k) { judge.appendChild(new Option(ch.name + " (" + ch.where + ")", String(k))); });
    var criterion = $("criterion-select");
    criteria.forEach(function (name, c) { criterion.appendChild(new Option(name, String(c))); });
  }

  // Each outcome option shows how many items it would keep under the chosen judge and criterion.
  function updateOutcomeCounts() {
    var codes = choice().outcomes;
    var options = $("outcome-select").options;
    var counts = { w: 0, l: 0, t: 0, u: 0, "-": 0 };
    for (var i = 0; i < N; i++) {
      if (state.criterion >= 0) {
        counts[codes[state.criterion][i]] += 1;
      } else {
        var seen = "";
        for (var c = 0; c < codes.length; c++) {
          var code = codes[c][i];
          if (seen.indexOf(code) < 0) { seen += code; counts[code] += 1; }
        }
      }
    }
    for (var k = 0; k < options.length; k++) {
      var value = options[k].value;
      options[k].textContent = value === "" ? "any (" + N + ")" : OUTCOME_LONG[value] + " (" + counts[value] + ")";
    }
  }

  // -- filtering ---------------------------------------------------------------------------

  function haystack(setIndex) {
    if (haystacks[setIndex]) return haystacks[setIndex];
    var verdicts = D.sets[setIndex].verdicts;
    var out = new Array(N);
    for (var i = 0; i < N; i++) {
      var parts = [items.id[i], items.prompt[i], items.persona[i], items.test[i], items.baseline[i]];
      var rows = verdicts[i];
      for (var r = 0; r < rows.length; r++) parts.push(rows[r][4], rows[r][5]);
      out[i] = parts.join("\n").toLowerCase();
    }
    haystacks[setIndex] = out;
    return out;
  }

  function applyFilters() {
    var ch = choice();
    var codes = ch.outcomes;
    var want = state.outcome;
    var crit = state.criterion;
    var terms = state.terms;
    var hay = terms.length ? haystack(ch.set) : null;
    var matches = [];
    for (var i = 0; i < N; i++) {
      if (want !== "") {
        if (crit >= 0) {
          if (codes[crit][i] !== want) continue;
        } else {
          var any = false;
          for (var c = 0; c < codes.length && !any; c++) any = codes[c][i] === want;
          if (!any) continue;
        }
      }
      if (hay) {
        var text = hay[i], ok = true;
        for (var t = 0; t < terms.length && ok; t++) ok = text.indexOf(terms[t]) >= 0;
        if (!ok) continue;
      }
      matches.push(i);
    }
    state.matches = matches;
    var pages = Math.max(1, Math.ceil(matches.length / state.size));
    if (state.page >= pages) state.page = pages - 1;
  }

  // -- one item ----------------------------------------------------------------------------

  function badge(code, label) {
    var node = el("span", "badge o-" + (code === "-" ? "n" : code), label ? label + ": " + OUTCOME_TEXT[code] : OUTCOME_TEXT[code]);
    node.dataset.outcome = code;
    return node;
  }

  function section(parent, className, title) {
    var node = el("section", className);
    node.appendChild(el("h3", null, title));
    parent.appendChild(node);
    return node;
  }

  function response(parent, role, i) {
    var model = column(role + "_model", i), strategy = column(role + "_strategy", i);
    var box = section(parent, "response " + role, role);
    var detail = (model ? " · " + model : "") + (strategy ? " (" + strategy + ")" : "");
    if (detail) box.firstChild.appendChild(textBlock("span", "h-detail", detail));
    var text = items[role][i];
    if (text === null || text === undefined) box.appendChild(el("p", "missing", "no " + role + " response recorded"));
    else box.appendChild(textBlock("div", "text", text));
    var input = items[role + "_input"][i];
    if (input) {
      var details = el("details", "input");
      details.appendChild(el("summary", null, "input the model saw"));
      details.appendChild(textBlock("pre", "text", input));
      box.appendChild(details);
    }
  }

  function sideOf(order, winner) {
    if (winner !== "A" && winner !== "B") return null;
    return (order === 0) === (winner === "A") ? "baseline" : "test";
  }

  function verdictTable(parent, c, rows, labels, several) {
    var table = el("table", "verdicts");
    var head = table.createTHead().insertRow();
    [["order", "c-order"], several ? ["judge", "c-judge"] : null, ["verdict", "c-verdict"], ["P(A)", "c-num"],
      ["attempts", "c-num"], ["feedback", "c-feedback"]].forEach(function (pair) {
      if (pair) head.appendChild(el("th", pair[1], pair[0]));
    });
    var body = table.createTBody();
    rows.forEach(function (v) {
      var tr = body.insertRow();
      tr.dataset.order = String(v[1]);
      tr.appendChild(el("td", "order", ORDER_TEXT[v[1]]));
      if (several) tr.appendChild(textBlock("td", "judge", labels[v[7]]));
      var side = sideOf(v[1], v[2]);
      var verdict = el("td", "verdict " + (side ? "side-" + side : "side-none"), side ? v[2] + " \u2192 " + side : "none");
      if (!side && v[5]) verdict.appendChild(textBlock("span", "reason", "unscored: " + v[5]));
      tr.appendChild(verdict);
      tr.appendChild(el("td", "num", v[3] === null ? "\u2013" : v[3].toFixed(3)));
      tr.appendChild(el("td", "num", v[6] === null ? "\u2013" : String(v[6])));
      var feedback = el("td", "feedback-cell");
      if (v[4]) feedback.appendChild(textBlock("div", "text feedback", v[4]));
      else feedback.appendChild(el("span", "missing", v[2] && v[3] !== null ? "no text (verdict read from P(A))" : "no text"));
      tr.appendChild(feedback);
    });
    parent.appendChild(table);
  }

  function card(i) {
    var ch = choice();
    var set = D.sets[ch.set];
    var article = el("article", "item");
    article.dataset.index = String(i);
    article.dataset.itemId = String(items.id[i]);
    var header = el("header", "item-head");
    header.appendChild(el("span", "item-no", "#" + (i + 1)));
    header.appendChild(textBlock("code", "item-id", items.id[i]));
    var badges = el("span", "badges");
    criteria.forEach(function (name, c) {
      if (state.criterion < 0 || state.criterion === c) badges.appendChild(badge(ch.outcomes[c][i], name));
    });
    header.appendChild(badges);
    article.appendChild(header);

    var prompt = section(article, "prompt", "prompt");
    prompt.appendChild(textBlock("div", "text", items.prompt[i] === null ? "" : items.prompt[i]));
    var persona = section(article, "persona", "persona");
    if (items.source[i]) persona.firstChild.appendChild(textBlock("span", "h-detail", " · " + items.source[i]));
    if (items.persona[i]) persona.appendChild(textBlock("div", "text", items.persona[i]));
    else persona.appendChild(el("p", "missing", "no persona"));
    var provenance = items.provenance[i];
    if (provenance && typeof provenance === "object") {
      var dl = el("dl", "provenance");
      Object.keys(provenance).forEach(function (key) {
        dl.appendChild(el("dt", null, key));
        dl.appendChild(textBlock("dd", null, provenance[key]));
      });
      persona.appendChild(dl);
    } else if (provenance) {
      persona.appendChild(textBlock("p", "provenance", provenance));
    }

    var pair = el("div", "pair");
    response(pair, "test", i);
    response(pair, "baseline", i);
    article.appendChild(pair);

    var rows = set.verdicts[i];
    var several = set.labels.length > 1 && ch.label === null;
    criteria.forEach(function (name, c) {
      if (state.criterion >= 0 && state.criterion !== c) return;
      var mine = rows.filter(function (v) { return v[0] === c && (ch.label === null || v[7] === ch.label); });
      var block = el("section", "criterion");
      block.dataset.criterion = name;
      var title = el("h3", null, name + " ");
      title.appendChild(badge(ch.outcomes[c][i]));
      block.appendChild(title);
      if (mine.length) verdictTable(block, c, mine, set.labels, several);
      else block.appendChild(el("p", "missing", "no verdicts recorded"));
      article.appendChild(block);
    });
    return article;
  }

  // -- the page of items -------------------------------------------------------------------

  function renderList() {
    var list = $("items");
    var matches = state.matches;
    var start = state.page * state.size;
    var end = Math.min(matches.length, start + state.size);
    var fragment = document.createDocumentFragment();
    for (var k = start; k < end; k++) fragment.appendChild(card(matches[k]));
    if (!matches.length) fragment.appendChild(el("p", "empty", N ? "No item matches these filters." : "This run has no items yet."));
    list.textContent = "";
    list.appendChild(fragment);
    var pages = Math.max(1, Math.ceil(matches.length / state.size));
    var status = matches.length
      ? "items " + (start + 1) + "\u2013" + end + " of " + matches.length + (matches.length < N ? " matching (" + N + " in the run)" : "") +
        " · page " + (state.page + 1) + " of " + pages
      : "0 of " + N + " items";
    $("status").textContent = status;
    $("status-bottom").textContent = status;
    ["prev", "prev-bottom"].forEach(function (id) { $(id).disabled = state.page === 0; });
    ["next", "next-bottom"].forEach(function (id) { $(id).disabled = state.page >= pages - 1; });
    document.documentElement.dataset.shown = String(end - start);
    document.documentElement.dataset.matches = String(matches.length);
  }

  // Filter and redraw, timing it with the layout it causes (reading offsetHeight forces it).
  function update(what, refilter) {
    var t = performance.now();
    if (refilter) applyFilters();
    renderList();
    void document.body.offsetHeight;
    var ms = performance.now() - t;
    if (refilter) {
      timings.filter = ms;
      timings.filters.push({ what: what, ms: ms, matches: state.matches.length });
    }
    return ms;
  }

  function goTo(page) {
    var pages = Math.max(1, Math.ceil(state.matches.length / state.size));
    var next = Math.min(Math.max(0, page), pages - 1);
    if (next === state.page) return;
    state.page = next;
    update("page", false);
    var top = $("items").getBoundingClientRect().top;
    if (top < 0) window.scrollBy(0, top - 8);
  }

  function wire() {
    $("judge-select").addEventListener("change", function (event) {
      state.choice = Number(event.target.value);
      state.page = 0;
      renderSummary();
      updateOutcomeCounts();
      update("judge", true);
    });
    $("outcome-select").addEventListener("change", function (event) {
      state.outcome = event.target.value;
      state.page = 0;
      update("outcome", true);
    });
    $("criterion-select").addEventListener("change", function (event) {
      state.criterion = event.target.value === "" ? -1 : Number(event.target.value);
      state.page = 0;
      updateOutcomeCounts();
      update("criterion", true);
    });
    $("size-select").addEventListener("change", function (event) {
      state.size = Number(event.target.value);
      state.page = 0;
      update("size", true);
    });
    var pending = null;
    function search() {
      pending = null;
      var terms = $("search").value.toLowerCase().split(/\s+/).filter(Boolean);
      if (terms.join(" ") === state.terms.join(" ")) return;
      state.terms = terms;
      state.page = 0;
      update("search", true);
    }
    // Typing waits for a pause on big runs, so each keystroke does not walk every item.
    $("search").addEventListener("input", function () {
      if (pending) clearTimeout(pending);
      pending = N > 2000 ? setTimeout(search, 150) : null;
      if (!pending) search();
    });
    $("controls").addEventListener("submit", function (event) { event.preventDefault(); search(); });
    [["prev", -1], ["prev-bottom", -1], ["next", 1], ["next-bottom", 1]].forEach(function (pair) {
      $(pair[0]).addEventListener("click", function () { goTo(state.page + pair[1]); });
    });
    document.addEventListener("keydown", function (event) {
      var tag = event.target && event.target.tagName;
      if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || event.altKey || event.ctrlKey || event.metaKey) return;
      if (event.key === "ArrowLeft") goTo(state.page - 1);
      else if (event.key === "ArrowRight") goTo(state.page + 1);
    });
  }

  fillSelects();
  renderSummary();
  updateOutcomeCounts();
  wire();
  applyFilters();
  renderList();
  void document.body.offsetHeight;
  var done = performance.now();
  timings.script = done - started;
  timings.load = done;  // since navigation start: reading the file, parsing it, the first page laid out
  window.runView = { timings: timings, state: state, items: N };
  document.documentElement.dataset.ready = "1";
})();
