"""The runs under an artifact root as the CLI, the static report and the studio see them.

A run is one task directory. Every artifact is read through `storage`, so a local root and
an s3:// root behave alike. Paths recorded inside manifests are followed by their directory
name under the root the run was found in, so a copied or synced artifact tree still resolves.
Nothing here renders: the report and the studio draw what these functions return.
"""
import datetime
import io
from dataclasses import dataclass

import pandas as pd
import torch
from luigi.parameter import MissingParameterException
from luigi.task_register import Register, TaskClassException

from ..errors import UserError
from . import storage
from .checkpoints import CHECKPOINT_PATTERN, FINAL_STATE, load_state

KEY_PARAMETERS = ("dataset", "image_size", "arch", "width", "base_channels", "phase", "steps",
                  "phase1_steps", "phase2_steps", "phase3_steps")
MAX_KEY_METRICS = 4
# Columns of a training log row that count or place it rather than measure it.
NOT_LOSSES = ("phase", "step", "steps", "images_per_s", "data_wait", "lr_completion", "lr_discriminator")
# Families whose final state holds a completion network (TrainInpainter's through its result.json).
INPAINTER_FAMILIES = ("PretrainCompletion", "PretrainDiscriminator", "TrainJoint", "TrainInpainter")
GENERATOR_FAMILIES = ("TrainDCGAN",)


@dataclass(frozen=True)
class Run:
    """One task directory under an artifact root; `manifest` is None while it is incomplete
    or when its manifest is broken, which `problem` then describes."""

    root: str
    name: str
    manifest: dict | None
    problem: str | None = None

    @property
    def directory(self) -> str:
        return storage.join(self.root, self.name)

    @property
    def family(self) -> str:
        return storage.TASK_DIRECTORY.match(self.name)["family"]

    @property
    def hash(self) -> str:
        return storage.TASK_DIRECTORY.match(self.name)["hash"]

    @property
    def complete(self) -> bool:
        return self.manifest is not None

    @property
    def parameters(self) -> dict:
        return (self.manifest or {}).get("parameters", {})

    @property
    def summary(self) -> dict:
        return (self.manifest or {}).get("summary", {})

    def path(self, name: str) -> str:
        return storage.join(self.directory, name)

    def files(self) -> dict[str, int | None]:
        """Every file with its size; sizes are known from the manifest, so None while incomplete."""
        if self.manifest:
            return {name: info["size"] for name, info in self.manifest["files"].items()}
        return dict.fromkeys(storage.list_files(self.directory))


def _last_parts(recorded_path: str, count: int) -> list[str]:
    return recorded_path.rstrip("/").split("/")[-count:]


def load_run(root: str, name: str) -> Run:
    try:
        return Run(root, name, storage.read_manifest(storage.join(root, name)))
    except storage.BrokenManifest as error:
        return Run(root, name, None, str(error))


def run_names(root: str) -> list[str]:
    return [name for name in storage.list_dirs(root) if storage.TASK_DIRECTORY.match(name)]


def all_runs(root: str) -> list[Run]:
    return [load_run(root, name) for name in run_names(root)]


def find_run(root: str, spec: str) -> Run:
    """A run named by its path, its directory name, a prefix of that name, or a prefix of its hash;
    one whose manifest is broken is refused."""
    if "/" in spec:
        root, name = spec.rstrip("/").rsplit("/", 1)
        if not (storage.TASK_DIRECTORY.match(name) and storage.list_files(spec.rstrip("/"))):
            raise UserError(f"{spec} is not a task directory")
    else:
        names = run_names(root)
        matches = [spec] if spec in names else [
            name for name in names if name.startswith(spec) or storage.TASK_DIRECTORY.match(name)["hash"].startswith(spec)]
        if not matches:
            raise UserError(f"no run under {root} matches {spec!r}; `python -m pipeline runs` lists them")
        if len(matches) > 1:
            raise UserError(f"{spec!r} matches {len(matches)} runs: {', '.join(matches)}; give more of the name")
        name = matches[0]
    run = load_run(root, name)
    if run.problem:
        raise UserError(run.problem)
    return run


def upstream(run: Run) -> list[Run]:
    recorded = (run.manifest or {}).get("upstream", {}).values()
    return [load_run(run.root, _last_parts(directory, 1)[0]) for directory in sorted(recorded)]


def ancestry(run: Run) -> list[Run]:
    """The run and every run upstream of it, each once, nearest first."""
    found, queue = {}, [run]
    while queue:
        current = queue.pop(0)
        if current.name not in found:
            found[current.name] = current
            queue += upstream(current)
    return list(found.values())


def timestamp(value: str | datetime.datetime) -> str:
    return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M")


def status(run: Run) -> str:
    if run.problem:
        return "broken manifest"
    return "complete" if run.complete else progress(run)


def progress(run: Run) -> str:
    """What an incomplete run got to: its latest checkpoint, or how many files it wrote, and when."""
    files = storage.list_files(run.directory)
    steps = [int(match.group(1)) for name in files if (match := CHECKPOINT_PATTERN.search(name))]
    reached = f"checkpoint at step {max(steps)}" if steps else f"{len(files)} files"
    return f"incomplete: {reached}, last write {timestamp(storage.last_modified(run.directory))} UTC"


def flatten(values: dict, prefix: str = "") -> dict:
    """Nested dicts as one dict with dotted keys."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def evaluation(summary: dict) -> dict | None:
    """An EvaluateInpainter summary (`n_images`, `methods` and, where reported, `by_kind` and
    `by_area`), also when nested in TrainInpainter's."""
    if "methods" in summary:
        return summary
    return summary.get("metrics_summary")


def evaluation_methods(summary: dict) -> dict | None:
    """Per-method test metrics of an evaluation summary, over every mask kind."""
    return (evaluation(summary) or {}).get("methods")


def evaluation_sizes(evaluation: dict) -> dict[int | None, dict]:
    """Each image size's results, smallest first, each with the keys of an evaluation summary and
    `n_at_own_size`; an evaluation from before per-size results is one size, None where it does not say."""
    if "sizes" not in evaluation:
        return {evaluation.get("image_size"): evaluation}
    return {int(size): results for size, results in sorted(evaluation["sizes"].items(), key=lambda item: int(item[0]))}


def nearest_evaluation(chain: list[Run]) -> tuple[dict, str] | None:
    """(evaluation summary, the run it comes from) of the nearest evaluation in the chain."""
    for run in chain:
        if evaluation_methods(run.summary):
            return evaluation(run.summary), run.name
    return None


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def key_metrics(summary: dict) -> str:
    if evaluation_methods(summary):
        parts = []
        for size, results in evaluation_sizes(evaluation(summary)).items():
            for kind, by_method in (results.get("by_kind") or {"all": results["methods"]}).items():
                text = f"{kind}{f' {size} px' if size else ''}: psnr_hole model {by_method['model']['psnr_hole']:.2f}"
                if baselines := {name: values["psnr_hole"] for name, values in by_method.items() if name != "model"}:
                    best = max(baselines, key=baselines.get)
                    text += f", best baseline {best} {baselines[best]:.2f}"
                parts.append(text)
        return "; ".join(parts)
    if "swd_samples" in summary:
        return f"patch SWD samples {summary['swd_samples']:.2f}, training images {summary['swd_train_images']:.2f}"
    entries = flatten(summary.get("last_log") or summary)
    shown = [f"{name}={value:.4g}" for name, value in entries.items() if is_number(value) and name not in NOT_LOSSES]
    return ", ".join(shown[:MAX_KEY_METRICS])


def key_parameters(run: Run) -> str:
    """KEY_PARAMETERS, then every other parameter the run was given that differs from what its task
    would run with now, so that runs differing only in, say, `seed` can be told apart."""
    shown = {key: run.parameters[key] for key in KEY_PARAMETERS if key in run.parameters}
    shown.update(changed_parameters(run))
    return " ".join(f"{key}={value}" for key, value in shown.items())


def changed_parameters(run: Run) -> dict[str, str]:
    """The run's significant parameters whose values differ from their task's default or luigi.cfg's."""
    try:
        declared = dict(Register.get_task_cls(run.family).get_params())
    except TaskClassException:  # a family this version of the pipeline does not define
        return {}
    changed = {}
    for name, value in run.parameters.items():
        parameter = declared.get(name)
        if name in KEY_PARAMETERS or parameter is None or not parameter.significant:
            continue
        try:
            current = parameter.serialize(parameter.task_value(run.family, name))
        except MissingParameterException:  # no default: the value is the run's own
            current = None
        if current != value:
            changed[name] = value
    return changed


def runs_table(root: str, family: str | None = None, dataset: str | None = None) -> pd.DataFrame:
    rows = []
    for run in all_runs(root):
        if family and run.family.lower() != family.lower():
            continue
        if dataset and run.parameters.get("dataset") != dataset:
            continue
        rows.append({
            "family": run.family, "hash": run.hash,
            "status": status(run),
            "parameters": key_parameters(run),
            "metrics": key_metrics(run.summary),
            "finished": timestamp(run.manifest["finished"]) if run.complete else "",
        })
    return pd.DataFrame(rows, columns=["family", "hash", "status", "parameters", "metrics", "finished"])


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024


def training_history(runs: list[Run]) -> pd.DataFrame:
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


def checkpoint_path(root: str, spec: str) -> str:
    """The saved state named by spec: a .pt file, a run with model.pt, or a TrainInpainter run
    (its result.json names the final checkpoint)."""
    if spec.endswith(".pt"):
        path = spec
    else:
        run = find_run(root, spec)
        path = run.path(FINAL_STATE)
        if not storage.exists(path) and storage.exists(run.path("result.json")):
            recorded = storage.read_json(run.path("result.json"))["checkpoint"]
            path = storage.join(run.root, *_last_parts(recorded, 2))
    if not storage.exists(path):
        raise UserError(f"no checkpoint at {path}; name a .pt file, a training run or a TrainInpainter run")
    return path


def model_state(path: str, device: torch.device, network: str) -> dict:
    """The state saved at path, which must hold `network`; checked as pipeline.artifacts.checkpoints.load_state checks."""
    state = load_state(path, device)
    networks = state.get("networks", {})
    if network not in networks:
        raise UserError(f"{path} holds no {network} network (it has: {', '.join(sorted(networks)) or 'none'})")
    return state
