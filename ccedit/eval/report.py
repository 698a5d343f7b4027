"""report.html: one self-contained page (inline style and script) beside its media folder.

Per item: the source, its structure map and each method's result playing side by side, with the scores under
each result; above them, the overall table and a plot per metric of its distribution per method. The plots are
small SVG strip charts written here, because no plotting library is among ccedit's dependencies and a chart of
dots and means needs none. A few lines of script mark each clip and plot as loaded or failed, and the page
header counts them, so a broken media folder shows at a glance.
"""

from __future__ import annotations

import html
from pathlib import Path

from ..io import atomic_path
from . import results as store
from .config import EvalConfig
from .summary import summary_rows

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; font-size: 0.9em; }
th:first-child, td:first-child { text-align: left; }
.plots img { width: 420px; margin: 0 1em 1em 0; border: 1px solid #eee; }
.item { border-top: 2px solid #888; padding: 0.5em 0 1em; }
.item h3 { margin: 0.2em 0; }
.prompts { font-size: 0.9em; color: #444; margin-bottom: 0.5em; }
.clips { display: flex; flex-wrap: wrap; gap: 0.8em; }
figure { margin: 0; width: 200px; }
figure video { width: 200px; background: #000; }
figcaption { font-size: 0.8em; }
.failed { color: #b00; font-size: 0.8em; width: 200px; }
#media-status { font-size: 0.9em; color: #555; }
"""

# Marks every clip and plot as loaded or failed (data-loaded) and sums them up in #media-status.
SCRIPT = """
(function () {
  var media = Array.prototype.slice.call(document.querySelectorAll('video, img'));
  var status = document.getElementById('media-status');
  function update() {
    // Where each item lies on the page (again after every load, as plots and clips change the layout), for
    // checking a full-page screenshot against the items.
    document.querySelectorAll('.item').forEach(function (item) {
      var box = item.getBoundingClientRect();
      item.dataset.top = Math.round(box.top + window.scrollY);
      item.dataset.bottom = Math.round(box.bottom + window.scrollY);
    });
    document.body.dataset.height = document.documentElement.scrollHeight;
    var loaded = media.filter(function (m) { return m.dataset.loaded === 'yes'; }).length;
    var failed = media.filter(function (m) { return m.dataset.loaded === 'no'; }).length;
    status.textContent = loaded + ' of ' + media.length + ' clips and plots loaded' +
      (failed ? ', ' + failed + ' failed' : '');
    status.dataset.loaded = loaded;
    status.dataset.failed = failed;
  }
  media.forEach(function (m) {
    var ok = function () { m.dataset.loaded = 'yes'; update(); };
    var bad = function () { m.dataset.loaded = 'no'; update(); };
    if (m.tagName === 'VIDEO') {
      if (m.readyState >= 2) { ok(); } else { m.addEventListener('loadeddata', ok); }
      m.addEventListener('error', bad);
    } else {
      if (m.complete && m.naturalWidth > 0) { ok(); } else { m.addEventListener('load', ok); }
      m.addEventListener('error', bad);
    }
  });
  update();
})();
"""


def write_report(output: Path, rows: list[dict], metrics: list[str], config: EvalConfig,
                 selected: int | None = None) -> Path:
    """The page of `rows` (every result in the folder); `selected`: how many of them this run's selection holds."""
    methods = list(dict.fromkeys([*(s.name for s in config.methods), *(r["method"] for r in rows)]))
    plots = write_plots(output, rows, metrics, methods)
    overall = [line for line in summary_rows(rows, metrics) if line["editing_type"] == "all"]
    this_run = "" if selected is None else (
        f" This run selected {selected} of these rows from {html.escape(config.benchmark.path)}; the others are "
        "earlier runs' results in this folder.")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>ccedit evaluation</title>", f"<style>{STYLE}</style></head><body>",
        "<h1>ccedit evaluation</h1>",
        f"<p>Every result in this folder: {len({r['item'] for r in rows})} edits, {len(methods)} methods, "
        f"{len(rows)} rows.{this_run} <span id=\"media-status\"></span></p>",
        "<h2>Mean scores</h2>", _table(overall, ["method", "items", "failed", *metrics, "seconds_per_frame"]),
        "<h2>Distributions</h2>", '<div class="plots">',
        *(f'<img src="{html.escape(p)}" alt="{html.escape(m)} per method">' for m, p in plots.items()),
        "</div>", "<h2>Items</h2>",
    ]
    by_item: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_item.setdefault(row["item"], {})[row["method"]] = row
    for item_id, per_method in by_item.items():
        parts.append(_item(output, item_id, per_method, methods, metrics))
    parts += [f"<script>{SCRIPT}</script>", "</body></html>"]
    path = output / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def _item(output: Path, item_id: str, per_method: dict[str, dict], methods: list[str], metrics: list[str]) -> str:
    first = next(iter(per_method.values()))
    video = store.MEDIA + "/" + store.slug(first["video"])
    level = "" if first["fantasy_level"] is None else f", fantasy level {first['fantasy_level']}"
    # A source that was never read (missing, unreadable) has no clips: its items' error stands in their place.
    source_error = next((r["error"] for r in per_method.values() if r["status"] != "ok"), None) or "not written"
    clips = [_figure(f"{video}/{name}.mp4", name) if (output / video / f"{name}.mp4").is_file()
             else _failure(name, f"no clip: {source_error}") for name in ("source", "structure")]
    for name in methods:
        row = per_method.get(name)
        if row is None:
            continue
        if row["status"] != "ok":
            clips.append(_failure(name, f"failed: {row['error'] or ''}"))
        elif not (output / row["media"]).is_file():
            clips.append(_failure(name, f"its result {row['media']} is missing from the folder"))
        else:
            scores = "<br>".join(f"{html.escape(m)}: {_number(row['scores'].get(m))}" for m in metrics)
            clips.append(_figure(row["media"], name, scores))
    return (
        f'<section class="item" id="item-{html.escape(item_id)}" data-item="{html.escape(item_id)}">'
        f"<h3>{html.escape(item_id)}</h3>"
        f'<div class="prompts">{html.escape(first["editing_type"])} ({html.escape(first["video_type"] or "-")}'
        f"{level})<br>source: {html.escape(first['source_prompt'])}<br>"
        f"target: {html.escape(first['target_prompt'])}</div>"
        f'<div class="clips">{"".join(clips)}</div></section>'
    )


def _figure(src: str, title: str, scores: str = "") -> str:
    return (f'<figure><video src="{html.escape(src)}" autoplay loop muted playsinline preload="auto"></video>'
            f"<figcaption><b>{html.escape(title)}</b>{'<br>' + scores if scores else ''}</figcaption></figure>")


def _failure(title: str, message: str) -> str:
    return f'<div class="failed"><b>{html.escape(title)}</b><br>{html.escape(message)}</div>'


def _table(lines: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_number(line.get(c))}</td>" for c in columns) + "</tr>" for line in lines)
    return f"<table><tr>{head}</tr>{body}</table>"


def _number(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))


def write_plots(output: Path, rows: list[dict], metrics: list[str], methods: list[str]) -> dict[str, str]:
    """One SVG per metric: each method's scores as dots on its own row, its mean as a bar. Paths relative to
    `output`."""
    folder = output / store.MEDIA / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    plots = {}
    for metric in metrics:
        values = {m: [r["scores"][metric] for r in rows if r["method"] == m and r["status"] == "ok"
                      and r["scores"].get(metric) is not None] for m in methods}
        path = folder / f"{store.slug(metric)}.svg"
        with atomic_path(path) as tmp:
            tmp.write_text(strip_chart(metric, values), encoding="utf-8")
        plots[metric] = f"{store.MEDIA}/plots/{path.name}"
    return plots


def strip_chart(title: str, values: dict[str, list[float]], width: int = 420, row_height: int = 28) -> str:
    """A self-contained SVG: one row per method, a dot per item, a vertical bar at the mean."""
    left, right, top = 110, 20, 30
    height = top + row_height * max(1, len(values)) + 30
    everything = [v for vs in values.values() for v in vs]
    low, high = (min(everything), max(everything)) if everything else (0.0, 1.0)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5

    def x(v: float) -> float:
        return left + (v - low) / (high - low) * (width - left - right)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>']
    for i, (method, vs) in enumerate(values.items()):
        y = top + row_height * i + row_height / 2
        colour = PALETTE[i % len(PALETTE)]
        out.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{html.escape(method)}</text>')
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y}" y2="{y}" stroke="#eee"/>')
        for j, v in enumerate(vs):
            jitter = ((j * 7) % 11 - 5) * row_height / 40  # spread equal scores a little, the same on every run
            out.append(f'<circle cx="{x(v):.2f}" cy="{y + jitter:.2f}" r="3" fill="{colour}" fill-opacity="0.6"/>')
        if vs:
            mean = sum(vs) / len(vs)
            out.append(f'<line x1="{x(mean):.2f}" x2="{x(mean):.2f}" y1="{y - 9}" y2="{y + 9}" stroke="{colour}" '
                       'stroke-width="2"/>')
    axis = top + row_height * max(1, len(values)) + 14
    out.append(f'<text x="{left}" y="{axis}" text-anchor="start">{low:.4g}</text>')
    out.append(f'<text x="{width - right}" y="{axis}" text-anchor="end">{high:.4g}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
