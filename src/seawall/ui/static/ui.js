// seawall web UI: draws the dashboard's charts with uPlot from the JSON the server embedded.
(function () {
  "use strict";
  var source = document.getElementById("dashboard-data");
  if (!source || typeof uPlot === "undefined") return;
  var data = JSON.parse(source.textContent);
  var palette = ["#0550ae", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#0a7b83", "#bc4c00", "#57606a"];
  var riskColours = { low: "#1a7f37", medium: "#9a6700", high: "#cf222e" };
  var reportColours = { "new": "#cf222e", investigating: "#9a6700", resolved: "#1a7f37", dismissed: "#57606a" };
  var utc = function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); };

  function seriesOf(name) {
    var pairs = data[name] || [];
    if (name === "flag_rate") pairs = pairs.slice(0, 8); // the most flagged categories
    return pairs.map(function (pair, i) {
      var colour = name === "risk" ? riskColours[pair[0]]
        : name === "reports" ? reportColours[pair[0]] : palette[i % palette.length];
      return [pair[0], pair[1], colour];
    });
  }

  function draw(element) {
    var name = element.getAttribute("data-chart");
    var lines = seriesOf(name);
    var percent = name === "flag_rate";
    var series = [{}].concat(lines.map(function (line) {
      return {
        label: line[0],
        stroke: line[2],
        width: 2,
        fill: name === "requests" || name === "queue_depth" ? "rgba(5, 80, 174, 0.08)" : undefined,
        spanGaps: name === "decision_time",
        points: { show: name === "decision_time" },
        value: percent
          ? function (u, v) { return v == null ? "—" : (v * 100).toFixed(2) + " %"; }
          : function (u, v) { return v == null ? "—" : String(v); },
      };
    }));
    var width = Math.max(200, element.clientWidth);
    var plot = new uPlot({
      width: width,
      height: 240,
      tzDate: utc,
      series: series,
      scales: { y: { range: function (u, min, max) { return [0, Math.max(percent ? 0.01 : 1, max || 0)]; } } },
      axes: [{}, {
        size: 60,
        values: percent
          ? function (u, ticks) { return ticks.map(function (t) { return (t * 100).toFixed(1) + "%"; }); }
          : undefined,
      }],
    }, [data.x].concat(lines.map(function (line) { return line[1]; })), element);
    var points = lines.reduce(function (n, line) {
      return n + line[1].filter(function (v) { return v !== null && v !== 0; }).length;
    }, 0);
    element.setAttribute("data-series", String(lines.length));
    element.setAttribute("data-points", String(points));
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
    element.setAttribute("data-rendered", "true");
  }

  Array.prototype.forEach.call(document.querySelectorAll("[data-chart]"), draw);
})();
