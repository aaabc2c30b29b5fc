// Loss and accuracy charts (plotly.js, served from the installed plotly package).

const FONT = { family: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size: 12, color: "#334155" };
const COLORS = { train: "#4f46e5", val: "#f97316" };

function layout(yTitle, percent, lastEpoch, emptyText) {
  const dtick = Math.max(1, Math.ceil(lastEpoch / 10));
  return {
    font: FONT,
    margin: { l: 56, r: 16, t: 8, b: 40 },
    height: 260,
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "rgba(0,0,0,0)",
    showlegend: true,
    legend: { orientation: "h", x: 0, y: 1.12 },
    xaxis: {
      title: { text: "epoch" },
      gridcolor: "#e2e8f0",
      zeroline: false,
      tick0: 0,
      dtick,
      range: [0.5, Math.max(lastEpoch, 2) + 0.5],
      automargin: true,
      visible: lastEpoch > 0,
    },
    yaxis: {
      title: { text: yTitle, standoff: 8 },
      gridcolor: "#e2e8f0",
      zeroline: false,
      tickformat: percent ? ".1%" : "",
      automargin: true,
      visible: lastEpoch > 0,
    },
    annotations: lastEpoch
      ? []
      : [{ text: emptyText, showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: { color: "#94a3b8", size: 13 } }],
    hovermode: "x unified",
  };
}

const CONFIG = {
  displaylogo: false,
  responsive: true,
  modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines"],
};

function trace(name, color, dash) {
  return { x: [], y: [], name, type: "scatter", mode: "lines+markers", line: { color, width: 2, dash }, marker: { size: 6 } };
}

/** Two charts for one job, fed epoch by epoch. */
export class JobCharts {
  constructor(lossEl, accEl) {
    this.lossEl = lossEl;
    this.accEl = accEl;
    this.emptyText = "Waiting for the first epoch…";
    this.reset();
  }

  available() {
    return typeof window.Plotly !== "undefined";
  }

  reset() {
    this.loss = [trace("train loss", COLORS.train), trace("val loss", COLORS.val, "dot")];
    this.acc = [trace("train accuracy", COLORS.train), trace("val accuracy", COLORS.val, "dot")];
    this.epochs = new Set();
    this.render();
  }

  add(metrics) {
    if (this.epochs.has(metrics.epoch)) return; // a replayed epoch after a reconnect
    this.epochs.add(metrics.epoch);
    const push = (t, value) => {
      if (value === null || value === undefined) return;
      t.x.push(metrics.epoch);
      t.y.push(value);
    };
    push(this.loss[0], metrics.train_loss);
    push(this.loss[1], metrics.val_loss);
    push(this.acc[0], metrics.train_accuracy);
    push(this.acc[1], metrics.val_accuracy);
    this.render();
  }

  render() {
    if (!this.available()) return;
    // Plotly.react keeps el.data in step with these arrays (new objects, so it sees the change)
    const copy = (traces) => traces.map((t) => ({ ...t, x: [...t.x], y: [...t.y] }));
    const last = Math.max(0, ...this.epochs);
    window.Plotly.react(this.lossEl, copy(this.loss), layout("loss", false, last, this.emptyText), CONFIG);
    window.Plotly.react(this.accEl, copy(this.acc), layout("accuracy", true, last, this.emptyText), CONFIG);
  }

  /** The text an empty chart shows (waiting, or nothing recorded). */
  setEmptyText(text) {
    if (text === this.emptyText) return;
    this.emptyText = text;
    if (!this.epochs.size) this.render();
  }

  resize() {
    if (!this.available()) return;
    for (const el of [this.lossEl, this.accEl]) {
      if (el.data) window.Plotly.Plots.resize(el);
    }
  }
}
