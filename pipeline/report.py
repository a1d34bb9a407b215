"""A static HTML report of a run: one index.html plus its images, readable from disk without a server.

It leads with the answer: the verdict (the model against the classical methods per mask kind
and image size), then every image its chain produced (the evaluation grid of each phase), the
test metrics with the model next to the floor (mean fill) and the classical baselines, the
loss curves from the training histories, and last the run's parameters.
"""
import html
import os

import pandas as pd

from ganmodels.rendering import loss_curves_png

from .artifacts import storage
from .evaluation import CLASSICAL_METHODS, HIGHER_IS_BETTER
from .artifacts.runs import evaluation_sizes, flatten, loss_columns, nearest_evaluation, training_history

IMAGES = "images"
METHOD_ROLES = {"model": "model", "mean_fill": "floor: the mean-filled input",
                "telea": "classical baseline (OpenCV Telea)",
                "navier_stokes": "classical baseline (OpenCV Navier-Stokes)"}
GRID_LEGENDS = {"RenderEvalGrid": "each row is masked input | completion | original"}
COUNTS = ("n",)  # columns of a metrics table that count images rather than measure fills
# The measures the verdict sets side by side, pixel ones then realism: (label, number format, unit).
VERDICT_MEASURES = {"psnr_hole": ("hole PSNR", ".1f", " dB"), "ssim": ("SSIM", ".3f", ""),
                    "border_error": ("border gradient error", ".4f", ""),
                    "c2st_accuracy": ("realism: C2ST accuracy", ".3f", ""), "swd_hole": ("hole patch SWD", ".3f", "")}
STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
tr.model td { font-weight: bold; }
figure { display: inline-block; margin: 0 1.5em 1.5em 0; vertical-align: top; }
img { max-width: 100%; }
img.grid { image-rendering: pixelated; width: 18em; }
"""


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}\n"


def _key_value_table(values: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in sorted(values.items()))
    return f"<table>{rows}</table>"


def _figure(caption: str, source: str, css_class: str = "") -> str:
    return (f'<figure><img class="{css_class}" src="{html.escape(source)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def image_caption(run, name: str) -> str:
    phase = run.parameters.get("phase")
    what = GRID_LEGENDS.get(run.family, "") if name == "grid.png" else name
    return f"{run.family}" + (f", phase {phase}" if phase else "") + (f": {what}" if what else "") + f" ({run.name})"


def chain_images(runs: list, suffixes: tuple[str, ...] = (".png",)) -> list[tuple]:
    """(run, file name) of every image in the runs' manifests, ordered by family and phase."""
    return [(run, name) for run in sorted(runs, key=lambda r: (r.family, str(r.parameters.get("phase", "")), r.name))
            for name in sorted((run.manifest or {}).get("files", {})) if name.endswith(suffixes)]


def copy_images(runs: list, out: str) -> str:
    """Every PNG of the runs' manifests copied next to the page, as figures ordered by family and phase."""
    figures = []
    for run, name in chain_images(runs):
        local_name = f"{run.name}-{name.replace('/', '-')}"
        storage.copy_to_local(run.path(name), os.path.join(out, IMAGES, local_name))
        figures.append(_figure(image_caption(run, name), f"{IMAGES}/{local_name}", "grid"))
    return "\n".join(figures)


def _direction(metric: str) -> str:
    return "higher is better" if metric in HIGHER_IS_BETTER else "lower is better"


def _cell(value) -> str:
    return f"<td>{value:.4f}</td>" if isinstance(value, float) else f"<td>{html.escape(str(value))}</td>"


def _header(columns: list[str]) -> str:
    return "".join(f"<th>{html.escape(column)}</th>" if column in COUNTS else
                   f'<th title="{_direction(column)}">{html.escape(column)} '
                   f'{"↑" if column in HIGHER_IS_BETTER else "↓"}</th>' for column in columns)


def _model_first(names) -> list[str]:
    return sorted(names, key=lambda name: (name != "model", name))


def metrics_table(methods: dict) -> str:
    """The test metrics per method, the model first, and how it compares with the best baseline."""
    table = pd.DataFrame(methods).T
    metrics = list(table.columns)
    table = table.loc[_model_first(table.index)]
    rows = [f'<tr class="{"model" if name == "model" else ""}"><td>{html.escape(name)}</td>'
            f"<td>{html.escape(METHOD_ROLES.get(name, ''))}</td>{''.join(map(_cell, row))}</tr>"
            for name, row in table.iterrows()]
    verdicts = []
    baselines = [name for name in table.index if name != "model"]
    for metric in metrics:
        if metric not in COUNTS and baselines and "model" in table.index:
            values = table.loc[baselines, metric].astype(float)
            higher = metric in HIGHER_IS_BETTER
            best = values.idxmax() if higher else values.idxmin()
            model = float(table.loc["model", metric])
            beats = model > values[best] if higher else model < values[best]
            verdicts.append(f"<li>{metric}: the model {'beats' if beats else 'does not beat'} the best baseline "
                            f"({html.escape(best)}): {model:.4f} vs {values[best]:.4f}</li>")
    return (f"<table><tr><th>method</th><th>role</th>{_header(metrics)}</tr>{''.join(rows)}</table>"
            f"<ul>{''.join(verdicts)}</ul>")


def area_table(buckets: dict) -> str:
    """One mask kind's test metrics per hole-area bucket, the model first in each."""
    metrics = list(dict.fromkeys(metric for methods in buckets.values() for values in methods.values()
                                 for metric in values))
    rows = [f'<tr class="{"model" if name == "model" else ""}"><td>{html.escape(bucket)}</td>'
            f"<td>{html.escape(name)}</td>{''.join(_cell(methods[name].get(metric, '')) for metric in metrics)}</tr>"
            for bucket, methods in buckets.items() for name in _model_first(methods)]
    return f"<table><tr><th>hole area</th><th>method</th>{_header(metrics)}</tr>{''.join(rows)}</table>"


def _size_label(size: int | None) -> str:
    return f"{size} px" if size else "size unknown"


def _images_at_own_size(results: dict) -> str:
    """How many images were scored at their own size, smaller than the one evaluated; "" when none."""
    own = results.get("n_at_own_size", 0)
    return f"{own} of {results.get('n_images', '?')} images scored at their own smaller size" if own else ""


def _comparison(metric: str, model: float, classical: list[float]) -> str:
    label, number, unit = VERDICT_MEASURES[metric]
    higher = metric in HIGHER_IS_BETTER
    best = max(classical) if higher else min(classical)
    outcome = "equal" if model == best else "better" if (model > best) == higher else "worse"
    difference = f"{model - best:+{number}}".replace("-", "−")
    return f"{label} {model:{number}}{unit} vs {best:{number}}{unit} ({difference}{unit}, {outcome})"


def verdict_lines(evaluation: dict) -> list[str]:
    """One line per image size and mask kind: the model against the better classical method on each
    VERDICT_MEASURES the evaluation reports, and how many images were scored at their own smaller size."""
    lines = []
    for size, results in evaluation_sizes(evaluation).items():
        for kind, methods in (results.get("by_kind") or {"all masks": results["methods"]}).items():
            model, parts = methods.get("model", {}), []
            for metric in VERDICT_MEASURES:
                classical = [methods[name][metric] for name in CLASSICAL_METHODS if metric in methods.get(name, {})]
                if metric in model and classical:
                    parts.append(_comparison(metric, model[metric], classical))
            if note := _images_at_own_size(results):
                parts.append(note)
            lines.append(f"{kind}, {_size_label(size)}: " + ("; ".join(parts) or "no measure to compare"))
    return lines


def verdict(evaluation: dict) -> str:
    """The verdict as a list, with what it compares said once."""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in verdict_lines(evaluation))
    return ("<p>The model against the better of OpenCV's Telea and Navier–Stokes on each measure: "
            f"the model's value vs that method's (the difference, and whether the model is better).</p><ul>{items}</ul>")


def _size_metrics(results: dict, heading: str) -> str:
    """One size's test metrics over all masks, then per mask kind and per hole-area bucket where the
    evaluation reports them (`by_kind`, `by_area`)."""
    note = _images_at_own_size(results)
    parts = [f"<p>{html.escape(str(results.get('n_images', '?')))} test images{f' ({html.escape(note)})' if note else ''}; "
             "↑ higher is better, ↓ lower is better.</p>",
             f"<{heading}>All masks</{heading}>", metrics_table(results["methods"])]
    for kind, methods in (results.get("by_kind") or {}).items():
        parts += [f"<{heading}>{html.escape(kind)} masks</{heading}>", metrics_table(methods)]
    for kind, buckets in (results.get("by_area") or {}).items():
        parts += [f"<{heading}>{html.escape(kind)} masks by hole area</{heading}>", area_table(buckets)]
    return "\n".join(parts)


def metrics_sections(evaluation: dict) -> str:
    """The test metrics of each image size the evaluation reports, under a heading per size when there are several."""
    sizes = evaluation_sizes(evaluation)
    if len(sizes) == 1:
        return _size_metrics(next(iter(sizes.values())), "h3")
    return "\n".join(f"<h3>{html.escape(_size_label(size))}</h3>\n{_size_metrics(results, 'h4')}"
                     for size, results in sizes.items())


def write_report(run, chain: list, out: str) -> str:
    """Write out/index.html and out/images/ for `run`; `chain` is the run and every run upstream of it.

    Runs are objects with name, family, parameters, summary, manifest and path(name), as
    pipeline.artifacts.runs.Run. Returns the path of index.html.
    """
    os.makedirs(os.path.join(out, IMAGES), exist_ok=True)
    status = (f"complete, finished {pd.Timestamp(run.manifest['finished']):%Y-%m-%d %H:%M} UTC" if run.complete
              else "incomplete")
    body = [f"<h1>{html.escape(run.name)}</h1><p>{html.escape(run.family)}: {html.escape(status)}</p>"]
    evaluation, source = nearest_evaluation(chain) or (None, None)
    if evaluation:
        body.append(_section(f"Verdict (from {source})", verdict(evaluation)))
    if figures := copy_images(chain, out):
        body.append(_section("Evaluation grids and images", figures))
    if evaluation:
        body.append(_section(f"Test metrics (from {source})", metrics_sections(evaluation)))
    history = training_history(chain)
    if losses := loss_columns(history):
        with open(os.path.join(out, IMAGES, "loss_curves.png"), "wb") as file:
            file.write(loss_curves_png(history, losses))
        body.append(_section("Loss curves", _figure("training losses", f"{IMAGES}/loss_curves.png")))
    body.append(_section("Parameters", _key_value_table(run.parameters)))
    if config := (run.manifest or {}).get("config"):
        body.append(_section("Resolved configuration", _key_value_table(flatten(config))))
    upstream_names = "".join(f"<li>{html.escape(r.name)}{'' if r.complete else ' (incomplete)'}</li>"
                             for r in chain[1:])
    body.append(_section("Upstream runs", f"<ul>{upstream_names}</ul>"))
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(run.name)}</title>'
            f"<style>{STYLE}</style></head>\n<body>\n{''.join(body)}</body></html>\n")
    index = os.path.join(out, "index.html")
    with open(index, "w", encoding="utf-8") as file:
        file.write(page)
    return index
