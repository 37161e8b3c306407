// Sortable leaderboard tables: click a column header to sort; undefined values stay last.
// A URL fragment such as #sort=0:gap:asc applies a sort on load (table 0, column "gap").
(function () {
  "use strict";
  function value(row, index, type) {
    var cell = row.cells[index];
    var raw = cell.getAttribute("data-sort");
    if (type === "num") {
      if (raw === null || raw === "") return null;
      var number = parseFloat(raw);
      return isNaN(number) ? null : number;
    }
    return (raw !== null ? raw : cell.textContent).trim().toLowerCase();
  }
  function sortBy(table, index, direction) {
    var header = table.tHead.rows[0].cells[index];
    var type = header.getAttribute("data-type");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, index, type), y = value(b, index, type);
      if (x === null && y === null) return 0;
      if (x === null) return 1;
      if (y === null) return -1;
      return x < y ? -direction : x > y ? direction : 0;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) { cell.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", direction > 0 ? "ascending" : "descending");
    table.setAttribute("data-sorted-by", header.getAttribute("data-key") + ":" + (direction > 0 ? "asc" : "desc"));
  }
  var tables = document.querySelectorAll("table.lb");
  Array.prototype.forEach.call(tables, function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, index) {
      var button = header.querySelector("button.sort");
      if (!button) return;
      button.addEventListener("click", function () {
        var current = header.getAttribute("aria-sort");
        // Numbers start with the best (largest) first; text starts A to Z.
        var first = header.getAttribute("data-type") === "num" ? -1 : 1;
        sortBy(table, index, current === (first > 0 ? "ascending" : "descending") ? -first : first);
      });
    });
  });
  var match = /(?:^#|&)sort=(\d+):([a-z0-9_-]+):(asc|desc)/.exec(window.location.hash);
  if (match && tables[+match[1]]) {
    var table = tables[+match[1]];
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, index) {
      if (header.getAttribute("data-key") === match[2]) sortBy(table, index, match[3] === "asc" ? 1 : -1);
    });
  }
  document.documentElement.setAttribute("data-sortable", String(tables.length));
})();
