// seawall web UI: draws the dashboard's charts with uPlot from the JSON the server embedded, and
// makes the copy buttons of long ids (audit table) work.
//
// Counts per bucket are bars, so an isolated busy hour is one bar (not a spike at the edge of a
// line, nor nothing at all between gaps): parts of a whole (risk levels, kinds of stop, report
// statuses) are stacked, flows side by side (held, decided). Rates and levels (flag rate, queue
// depth, time to decision) are lines with a point at every value, so a lone value still shows.
// Each drawn chart is in window.seawallCharts (the browser test reads what is drawn from it).
(function () {
  "use strict";
  var source = document.getElementById("dashboard-data");
  if (!source || typeof uPlot === "undefined") return;
  var data = JSON.parse(source.textContent);
  var palette = ["#0550ae", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#0a7b83", "#bc4c00", "#57606a"];
  var riskColours = { low: "#1a7f37", medium: "#9a6700", high: "#cf222e" };
  var reportColours = { "new": "#cf222e", investigating: "#9a6700", resolved: "#1a7f37", dismissed: "#57606a" };
  var STACKED = { requests: true, risk: true, blocks: true, reports: true };
  var GROUPED = { review_flow: true };
  var utc = function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); };
  window.seawallCharts = {};

  function seriesOf(name) {
    var pairs = data[name] || [];
    if (name === "flag_rate") pairs = pairs.slice(0, 8); // the most flagged categories
    return pairs.map(function (pair, i) {
      var colour = name === "risk" ? riskColours[pair[0]]
        : name === "reports" ? reportColours[pair[0]] : palette[i % palette.length];
      return { label: pair[0], values: pair[1], colour: colour };
    });
  }

  // Stacked bars: each series is drawn as the running total up to it, the largest first, so the
  // smaller totals cover it and every part keeps its own colour; the legend shows the part itself.
  function stack(lines) {
    var totals = [];
    var running = data.x.map(function () { return 0; });
    lines.forEach(function (line) {
      running = running.map(function (sum, i) { return sum + (line.values[i] || 0); });
      totals.push(running.slice());
    });
    return totals;
  }

  function draw(element) {
    var name = element.getAttribute("data-chart");
    var lines = seriesOf(name);
    var percent = name === "flag_rate";
    var stacked = !!STACKED[name];
    var grouped = !!GROUPED[name];
    var shown = stacked ? stack(lines) : lines.map(function (line) { return line.values; });
    var order = lines.map(function (line, i) { return i; });
    if (stacked) order.reverse(); // the tallest total first
    var format = function (v) {
      if (v == null) return "—";
      return percent ? (v * 100).toFixed(2) + " %" : String(v);
    };
    var series = [{}].concat(order.map(function (i) {
      var line = lines[i];
      var one = {
        label: line.label,
        stroke: line.colour,
        width: stacked || grouped ? 0 : 2,
        value: function (u, v, s, idx) {
          return idx == null ? "—" : format(stacked || grouped ? line.values[idx] : v);
        },
      };
      if (stacked || grouped) {
        one.fill = line.colour;
        one.paths = uPlot.paths.bars({
          size: grouped ? [0.35, 60, 1] : [0.7, 120, 1],
          align: grouped ? (i === 0 ? -1 : 1) : 0,
        });
        one.points = { show: false };
      } else {
        one.points = { show: true, size: 6, fill: line.colour };
      }
      return one;
    }));
    var width = Math.max(200, element.clientWidth);
    var plot = new uPlot({
      width: width,
      height: 240,
      tzDate: utc,
      series: series,
      scales: {
        // Half a bucket of room at each end, so the first and last bars are whole.
        x: { range: function (u, min, max) {
          var half = (data.bucket_s || 3600) / 2;
          return [(data.x[0] || min) - half, (data.x[data.x.length - 1] || max) + half];
        } },
        y: { range: function (u, min, max) { return [0, Math.max(percent ? 0.01 : 1, max || 0)]; } },
      },
      axes: [{}, {
        size: 60,
        values: percent
          ? function (u, ticks) { return ticks.map(function (t) { return (t * 100).toFixed(1) + "%"; }); }
          : undefined,
      }],
    }, [data.x].concat(order.map(function (i) { return shown[i]; })), element);
    var points = lines.reduce(function (n, line) {
      return n + line.values.filter(function (v) { return v !== null && v !== 0; }).length;
    }, 0);
    element.setAttribute("data-series", String(lines.length));
    element.setAttribute("data-points", String(points));
    element.setAttribute("data-kind", stacked ? "stacked-bars" : grouped ? "grouped-bars" : "points");
    if (!lines.length) {
      var none = document.createElement("p");
      none.className = "hint";
      none.textContent = "Nothing to show in this range.";
      element.appendChild(none);
    }
    if (window.ResizeObserver) {
      new ResizeObserver(function () {
        var w = Math.max(200, element.clientWidth);
        if (Math.abs(w - plot.width) > 4) plot.setSize({ width: w, height: 240 });
      }).observe(element);
    }
    window.seawallCharts[name] = plot;
    element.setAttribute("data-rendered", "true");
  }

  Array.prototype.forEach.call(document.querySelectorAll("[data-chart]"), draw);
})();

// Copy buttons (button.copy[data-copy]): shown only where the clipboard can be written (a secure
// context: https, or loopback); a click copies the whole value and marks the button data-copied.
(function () {
  "use strict";
  if (!navigator.clipboard || !window.isSecureContext) return;
  Array.prototype.forEach.call(document.querySelectorAll("button.copy[data-copy]"), function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(button.getAttribute("data-copy")).then(function () {
        button.setAttribute("data-copied", "true");
      }, function () {
        button.setAttribute("data-copied", "false");
      });
    });
  });
})();
