"""The studio's HTML: every value that comes from an artifact is escaped here."""
import html
import urllib.parse

from .. import report
from ..artifacts.runs import (GENERATOR_FAMILIES, INPAINTER_FAMILIES, Run, evaluation, flatten, human_size,
                    is_number, key_parameters, nearest_evaluation, status, timestamp)

EVALUATION_KEYS = ("methods", "by_kind", "by_area")
NAVIGATION = (("/", "Runs"), ("/compare", "Compare"), ("/try", "Try it"), ("/sample", "Sample"))


def escape(value) -> str:
    return html.escape(str(value))


def run_link(name: str) -> str:
    return f'<a href="/runs/{urllib.parse.quote(name)}">{escape(name)}</a>'


def file_url(run: Run, name: str) -> str:
    return f"/runs/{urllib.parse.quote(run.name)}/files/{urllib.parse.quote(name)}"


def page(title: str, body: str, scripts: tuple[str, ...] = ()) -> str:
    links = "".join(f'<a href="{href}">{label}</a>' for href, label in NAVIGATION)
    tags = "".join(f'<script src="/static/{script}" defer></script>' for script in scripts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · studio</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="/static/favicon.svg"><link rel="stylesheet" href="/static/studio.css">{tags}</head>\n'
            f'<body><nav><span class="brand">gan-pipeline studio</span>{links}</nav>\n<main>{body}</main></body></html>\n')


def message_page(title: str, message: str) -> str:
    return page(title, f'<h1>{escape(title)}</h1><p class="error">{escape(message)}</p><p><a href="/">All runs</a></p>')


def _key_value_table(values: dict) -> str:
    rows = "".join(f"<tr><th>{escape(key)}</th><td>{escape(value)}</td></tr>" for key, value in sorted(values.items()))
    return f'<table class="keys">{rows}</table>'


def runs_table(rows: list[dict]) -> str:
    """The columns of `python -m pipeline runs`, a box to pick runs to compare, a link to each run."""
    body = []
    for row in rows:
        name = f"{row['family']}-{row['hash']}"
        incomplete = row["status"].startswith("incomplete")
        body.append(f'<tr data-family="{escape(row["family"])}"{" data-incomplete" if incomplete else ""}>'
                    f'<td><input type="checkbox" name="run" value="{escape(name)}" aria-label="compare {escape(name)}"></td>'
                    f"<td>{run_link(name)}</td><td>{escape(row['status'])}</td><td>{escape(row['parameters'])}</td>"
                    f"<td>{escape(row['metrics'])}</td><td>{escape(row['finished'])}</td></tr>")
    return ('<table id="runs" class="runs"><thead><tr><th></th><th>run</th><th>status</th><th>parameters</th>'
            f'<th>metrics</th><th>finished (UTC)</th></tr></thead><tbody>{"".join(body)}</tbody></table>')


def runs_page(root: str, rows: list[dict]) -> str:
    families = sorted({row["family"] for row in rows})
    options = "".join(f'<option value="{escape(family)}">{escape(family)}</option>' for family in families)
    body = (f"<h1>Runs</h1><p>Every task directory under <code>{escape(root)}</code>. Incomplete runs show their "
            "latest checkpoint and refresh while they train.</p>"
            '<form action="/compare" method="get" id="runs-form"><div class="toolbar">'
            '<input type="search" id="filter" placeholder="filter: any text of a row" aria-label="filter runs">'
            f'<select id="family" aria-label="family"><option value="">every family</option>{options}</select>'
            '<button type="submit">Compare the ticked runs</button></div>'
            f'<div id="runs-holder">{runs_table(rows)}</div></form>'
            if rows else f"<h1>Runs</h1><p>No runs under <code>{escape(root)}</code> yet.</p>")
    return page("Runs", body, ("runs.js",))


def _figures(chain: list[Run]) -> str:
    """Every image of the chain's manifests, as the report orders them; run.js scales them up without smoothing."""
    figures = []
    for run, name in report.chain_images(chain, (".png", ".gif")):
        caption = escape(report.image_caption(run, name))
        figures.append(f'<figure><img class="pixels" src="{file_url(run, name)}" alt="{caption}">'
                       f"<figcaption>{caption}</figcaption></figure>")
    return "".join(figures)


def _files_table(run: Run) -> str:
    rows = "".join(f'<tr><td><a href="{file_url(run, name)}?download=1">{escape(name)}</a></td>'
                   f'<td class="number">{escape(human_size(size))}</td></tr>' for name, size in run.files().items())
    return f'<table class="files"><tr><th>file</th><th>size</th></tr>{rows}</table>'


def _chain_list(chain: list[Run]) -> str:
    items = "".join(f"<li>{run_link(run.name)} <span class='muted'>({escape(status(run).split(':')[0])})</span></li>"
                    for run in chain[1:])
    return f"<ul>{items}</ul>" if items else "<p>None: this run reads only its source.</p>"


def run_page(run: Run, chain: list[Run], has_losses: bool) -> str:
    state = (f"complete, finished {timestamp(run.manifest['finished'])} UTC" if run.complete
             else escape(status(run)))
    actions = []
    if run.complete and run.family in INPAINTER_FAMILIES:
        actions.append(f'<a class="button" href="/try?model={urllib.parse.quote(run.name)}">Try it</a>')
    if run.complete and run.family in GENERATOR_FAMILIES:
        actions.append(f'<a class="button" href="/sample?model={urllib.parse.quote(run.name)}">Sample</a>')
    body = [f"<h1>{escape(run.name)}</h1>",
            f'<p id="status"{"" if run.complete else " data-incomplete"}>{escape(run.family)}: {state}</p>',
            f'<p class="actions">{"".join(actions)}</p>' if actions else ""]
    summary, source = nearest_evaluation(chain) or (None, None)
    if summary:
        body.append(f"<h2>Verdict <span class='muted'>(from {run_link(source)})</span></h2>" + report.verdict(summary))
    if figures := _figures(chain):
        body.append(f'<h2>Grids and images</h2><div class="figures">{figures}</div>')
    if summary:
        body.append("<h2>Test metrics</h2>" + report.metrics_sections(summary))
    if has_losses:
        body.append(f'<h2>Loss curves</h2><img class="curves" src="/runs/{urllib.parse.quote(run.name)}/losses.png" '
                    'alt="training losses of every phase">')
    body.append("<h2>Parameters</h2>" + _key_value_table(run.parameters))
    if config := (run.manifest or {}).get("config"):
        body.append("<h2>Resolved configuration</h2>" + _key_value_table(flatten(config)))
    body.append("<h2>Upstream runs</h2>" + _chain_list(chain))
    body.append("<h2>Files</h2>" + _files_table(run))
    return page(run.name, "".join(body), ("run.js",))


def _run_metrics(run: Run) -> dict:
    """What to set side by side: a run's test metrics where it has them, else its last log row."""
    return flatten(evaluation(run.summary) or run.summary.get("last_log") or {})


def _best(key: str, values: list) -> float | None:
    """The best of a row of test metrics (dotted keys below methods, by_kind or by_area), else None."""
    numbers = [value for value in values if is_number(value)]
    metric = key.rsplit(".", 1)[-1]
    if len(numbers) < 2 or key.split(".", 1)[0] not in EVALUATION_KEYS or metric in report.COUNTS:
        return None
    return max(numbers) if metric in report.HIGHER_IS_BETTER else min(numbers)


def compare_page(runs: list[Run], choices: list[str]) -> str:
    if len(runs) < 2:
        options = "".join(f'<label><input type="checkbox" name="run" value="{escape(name)}">{escape(name)}</label>'
                          for name in choices)
        return page("Compare", "<h1>Compare</h1><p>Tick two or more runs.</p>"
                    f'<form action="/compare" method="get" class="choices">{options}'
                    '<button type="submit">Compare</button></form>')
    header = "<tr><th></th>" + "".join(f"<th>{run_link(run.name)}</th>" for run in runs) + "</tr>"
    keys = sorted({key for run in runs for key in run.parameters})
    differing = [key for key in keys if len({run.parameters.get(key) for run in runs}) > 1]
    parameter_rows = "".join(f"<tr><th>{escape(key)}</th>" + "".join(
        f"<td>{escape(run.parameters.get(key, '—'))}</td>" for run in runs) + "</tr>" for key in differing)
    metrics = [_run_metrics(run) for run in runs]
    metric_rows = []
    for key in dict.fromkeys(key for values in metrics for key in values if is_number(values[key])):
        values = [values.get(key) for values in metrics]
        best = _best(key, values)
        cells = "".join(f'<td class="number{" best" if best is not None and value == best else ""}">'
                        f"{value:.4f}</td>" if is_number(value) else "<td>—</td>" for value in values)
        metric_rows.append(f"<tr><th>{escape(key)}</th>{cells}</tr>")
    same = f"<p>{len(keys) - len(differing)} other parameters are the same in every run.</p>"
    return page("Compare", "<h1>Compare</h1><h2>Parameters that differ</h2>"
                + (f'<table class="compare">{header}{parameter_rows}</table>' if differing else "<p>None.</p>") + same
                + "<h2>Metrics</h2><p>Test metrics where a run has them, else its last logged losses; the best "
                  "value of a row is marked.</p>"
                + (f'<table class="compare">{header}{"".join(metric_rows)}</table>' if metric_rows else "<p>None.</p>"))


def _run_options(runs: list[Run], selected: str | None) -> str:
    return "".join(f'<option value="{escape(run.name)}"{" selected" if run.name == selected else ""}>'
                   f"{escape(run.name)} ({escape(key_parameters(run))})</option>" for run in runs)


def try_page(models: list[Run], selected: str | None, limits: dict) -> str:
    if not models:
        return page("Try it", "<h1>Try it</h1><p>No completed inpainting run yet: train one with "
                    "<code>luigi --module pipeline TrainInpainter --local-scheduler</code>.</p>")
    body = f"""<h1>Try it</h1>
<div class="toolbar"><label>Model <select id="model">{_run_options(models, selected)}</select></label></div>
<h2>1. An image</h2>
<p>Pick a test image of the model's dataset, or upload one (at most {limits['max_upload_mb']:g} MB and
{limits['max_pixels']:,} pixels; it is filled at its own resolution).</p>
<div id="test-images" class="thumbs"></div>
<p><input type="file" id="upload" accept="image/*" aria-label="upload an image"></p>
<h2>2. Paint what should go</h2>
<div class="toolbar">
<label>Brush <input type="range" id="brush" min="1" max="64" value="6"> <span id="brush-size">6</span> px</label>
<button type="button" id="eraser" aria-pressed="false">Eraser</button>
<button type="button" id="undo">Undo</button><button type="button" id="clear">Clear</button>
<label><input type="checkbox" id="poisson"> Poisson blending</label>
<button type="button" id="fill" class="primary">Fill</button>
</div>
<div class="stage" id="stage"><canvas id="picture"></canvas><canvas id="mask"></canvas></div>
<p id="message" role="status"></p>
<h2>3. The fills</h2>
<div class="results">
<figure><img id="result-model" class="pixels result" alt="the model's fill"><figcaption>the model
<button type="button" class="toggle" data-target="result-model">before / after</button>
<a id="download-model" download="filled-model.png">download</a></figcaption></figure>
<figure><img id="result-telea" class="pixels result" alt="OpenCV Telea's fill"><figcaption>OpenCV Telea
<button type="button" class="toggle" data-target="result-telea">before / after</button>
<a id="download-telea" download="filled-telea.png">download</a></figcaption></figure>
</div>"""
    return page("Try it", body, ("tryit.js",))


def sample_page(generators: list[Run], selected: str | None) -> str:
    if not generators:
        return page("Sample", "<h1>Sample</h1><p>No completed DCGAN run yet: train one with "
                    "<code>luigi --module pipeline TrainDCGAN --local-scheduler</code>.</p>")
    body = f"""<h1>Sample</h1>
<div class="toolbar"><label>Model <select id="model">{_run_options(generators, selected)}</select></label></div>
<h2>A grid from a seed</h2>
<div class="toolbar"><label>Seed <input type="number" id="seed" value="0" min="0"></label>
<label>Images <input type="number" id="count" value="16" min="1" max="64"></label>
<button type="button" id="draw" class="primary">Draw</button></div>
<img id="grid" class="pixels" alt="samples">
<h2>A walk between two latents</h2>
<div class="toolbar"><label>From seed <input type="number" id="seed-a" value="1" min="0"></label>
<label>to seed <input type="number" id="seed-b" value="2" min="0"></label>
<label>t <input type="range" id="t" min="0" max="1" step="0.05" value="0"> <span id="t-value">0</span></label></div>
<img id="walk" class="pixels" alt="the latent between the two seeds">
<p id="message" role="status"></p>"""
    return page("Sample", body, ("sample.js",))
