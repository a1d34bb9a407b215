"""A static HTML report of a run: one index.html plus its images, readable from disk without a server.

It shows the run's parameters, every image its chain produced (the evaluation grid of each
phase), loss curves from the training histories, and the test metrics with the model next
to the floor (mean fill) and the classical baselines.
"""
import html
import io
import os

import pandas as pd
from matplotlib.figure import Figure

from . import storage
from .evaluation import HIGHER_IS_BETTER

IMAGES = "images"
NOT_LOSSES = ("phase", "step", "steps", "images_per_s", "data_wait", "lr_completion", "lr_discriminator")
METHOD_ROLES = {"model": "model", "mean_fill": "floor: the mean-filled input",
                "telea": "classical baseline (OpenCV Telea)",
                "navier_stokes": "classical baseline (OpenCV Navier-Stokes)"}
GRID_LEGENDS = {"RenderEvalGrid": "each row is masked input | completion | original"}
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


def flatten(values: dict, prefix: str = "") -> dict:
    """Nested dicts as one dict with dotted keys."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _figure(caption: str, source: str, css_class: str = "") -> str:
    return (f'<figure><img class="{css_class}" src="{html.escape(source)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _image_caption(run, name: str) -> str:
    phase = run.parameters.get("phase")
    what = GRID_LEGENDS.get(run.family, "") if name == "grid.png" else name
    return f"{run.family}" + (f", phase {phase}" if phase else "") + (f": {what}" if what else "") + f" ({run.name})"


def copy_images(runs: list, out: str) -> str:
    """Every PNG of the runs' manifests copied next to the page, as figures ordered by family and phase."""
    figures = []
    for run in sorted(runs, key=lambda r: (r.family, str(r.parameters.get("phase", "")), r.name)):
        for name in sorted((run.manifest or {}).get("files", {})):
            if name.endswith(".png"):
                local_name = f"{run.name}-{name.replace('/', '-')}"
                storage.copy_to_local(run.path(name), os.path.join(out, IMAGES, local_name))
                figures.append(_figure(_image_caption(run, name), f"{IMAGES}/{local_name}", "grid"))
    return "\n".join(figures)


def training_history(runs: list) -> pd.DataFrame:
    """The logged rows of every training run in the chain, each (phase, step) once, in training order.

    Each phase's history.csv repeats the rows of the phases before it. Rows have a `step`,
    and a `phase` where training has phases.
    """
    frames = []
    for run in runs:
        if "history.csv" in (run.manifest or {}).get("files", {}):
            frames.append(pd.read_csv(io.BytesIO(storage.read_bytes(run.path("history.csv")))))
    if not frames:
        return pd.DataFrame()
    history = pd.concat(frames, ignore_index=True)
    order = [column for column in ("phase", "step") if column in history]
    return history.drop_duplicates(subset=order).sort_values(order, ignore_index=True)


def loss_columns(history: pd.DataFrame) -> list[str]:
    return [column for column in history.columns if column not in NOT_LOSSES
            and pd.api.types.is_numeric_dtype(history[column]) and history[column].notna().any()]


def plot_losses(history: pd.DataFrame, losses: list[str], path: str) -> None:
    """One panel per logged loss against the step counted across phases, phase starts dashed."""
    steps = history["step"].astype(float)
    starts = []
    if "phase" in history and "steps" in history:
        phase_lengths = history.groupby("phase")["steps"].max()
        offsets = phase_lengths.cumsum() - phase_lengths
        steps = steps + history["phase"].map(offsets)
        starts = list(offsets.iloc[1:])
    figure = Figure(figsize=(4 * len(losses), 3), layout="constrained")
    for axes, loss in zip(figure.subplots(1, len(losses), squeeze=False, sharex=True)[0], losses):
        axes.plot(steps, history[loss], marker=".")
        for start in starts:
            axes.axvline(start, color="grey", linestyle="--", linewidth=0.8)
        axes.set(title=loss, xlabel="step (all phases)")
    figure.savefig(path, dpi=80)


def metrics_table(methods: dict) -> str:
    """The test metrics per method, the model first, and how it compares with the best baseline."""
    table = pd.DataFrame(methods).T
    table.insert(0, "role", [METHOD_ROLES.get(name, "") for name in table.index])
    table = table.loc[sorted(table.index, key=lambda name: (name != "model", name))]
    rows = []
    for name, row in table.iterrows():
        cells = "".join(f"<td>{value:.4f}</td>" if isinstance(value, float) else f"<td>{html.escape(str(value))}</td>"
                        for value in row)
        rows.append(f'<tr class="{"model" if name == "model" else ""}"><td>{html.escape(name)}</td>{cells}</tr>')
    header = "".join(f"<th>{html.escape(column)}</th>" for column in ["method", *table.columns])
    verdicts = []
    baselines = [name for name in table.index if name != "model"]
    for metric, higher in HIGHER_IS_BETTER.items():
        if metric in table and baselines and "model" in table.index:
            values = table.loc[baselines, metric].astype(float)
            best = values.idxmax() if higher else values.idxmin()
            model = float(table.loc["model", metric])
            beats = model > values[best] if higher else model < values[best]
            verdicts.append(f"<li>{metric}: the model {'beats' if beats else 'does not beat'} the best baseline "
                            f"({html.escape(best)}): {model:.4f} vs {values[best]:.4f}</li>")
    return f"<table><tr>{header}</tr>{''.join(rows)}</table><ul>{''.join(verdicts)}</ul>"


def area_table(buckets: dict) -> str:
    """Hole PSNR of every method per hole-area bucket, with the number of images in each."""
    table = pd.DataFrame({bucket: {method: values["psnr_hole"] for method, values in methods.items()}
                          for bucket, methods in sorted(buckets.items())})
    counts = {bucket: next(iter(methods.values()))["n"] for bucket, methods in buckets.items()}
    header = "".join(f"<th>{html.escape(bucket)} of the image ({counts[bucket]} images)</th>" for bucket in table)
    rows = "".join(f"<tr class=\"{'model' if name == 'model' else ''}\"><td>{html.escape(name)}</td>"
                   + "".join(f"<td>{value:.2f}</td>" for value in row) + "</tr>"
                   for name, row in table.loc[sorted(table.index, key=lambda n: (n != "model", n))].iterrows())
    return f"<table><tr><th>hole PSNR (dB) by hole area</th>{header}</tr>{rows}</table>"


def evaluation_summary(summary: dict) -> dict | None:
    """An EvaluateInpainter summary, also when nested in TrainInpainter's."""
    found = summary if "methods" in summary else summary.get("metrics_summary", {})
    return found if found.get("methods") else None


def evaluation_methods(summary: dict) -> dict | None:
    """Per-method test metrics of an EvaluateInpainter summary, also when nested in TrainInpainter's."""
    return (evaluation_summary(summary) or {}).get("methods")


def evaluation_sections(evaluation: dict, source: str) -> str:
    """The metrics per mask kind with the hole-area buckets, or overall for evaluations that had no kinds."""
    if not evaluation.get("by_kind"):
        return _section(f"Test metrics (from {source})", metrics_table(evaluation["methods"]))
    return "".join(_section(f"Test metrics, {kind} holes (from {source})",
                            metrics_table(methods) + area_table(evaluation["by_area"].get(kind, {})))
                   for kind, methods in evaluation["by_kind"].items())


def _evaluation(runs: list) -> tuple[dict, str] | None:
    """(evaluation summary, the run it comes from) of the nearest evaluation in the chain."""
    for run in runs:
        if evaluation := evaluation_summary(run.summary):
            return evaluation, run.name
    return None


def write_report(run, chain: list, out: str) -> str:
    """Write out/index.html and out/images/ for `run`; `chain` is the run and every run upstream of it.

    Runs are objects with name, family, parameters, summary, manifest and path(name), as
    pipeline.cli.Run. Returns the path of index.html.
    """
    os.makedirs(os.path.join(out, IMAGES), exist_ok=True)
    status = (f"complete, finished {pd.Timestamp(run.manifest['finished']):%Y-%m-%d %H:%M} UTC" if run.complete
              else "incomplete")
    body = [f"<h1>{html.escape(run.name)}</h1><p>{html.escape(run.family)}: {html.escape(status)}</p>"]
    if found := _evaluation(chain):
        body.append(evaluation_sections(*found))
    if figures := copy_images(chain, out):
        body.append(_section("Evaluation grids and images", figures))
    history = training_history(chain)
    if losses := loss_columns(history):
        plot_losses(history, losses, os.path.join(out, IMAGES, "loss_curves.png"))
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
