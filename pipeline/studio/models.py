"""Trained networks of the runs under the studio's root, each loaded once and reused."""
import collections
import threading

import torch

from ganmodels.dcgan.sampling import generator_from_state

from ..artifacts import storage
from ..infill import Inpainter
from ..errors import UserError
from ..artifacts.runs import Run, checkpoint_path, load_run, model_state, run_names

# Loaded networks kept at once; a default inpainter takes a few MB, so this bounds memory, not speed.
CACHED_MODELS = 4


def usable_runs(root: str, families: tuple[str, ...]) -> list[Run]:
    """The complete runs of these families, newest first."""
    runs = [load_run(root, name) for name in run_names(root) if name.split("-")[0] in families]
    return sorted((run for run in runs if run.complete), key=lambda run: run.manifest["finished"], reverse=True)


class Models:
    """Inpainters and generators by run name (an exact directory name of a run that holds
    one, as the app checks), loaded from their verified final state once.

    A state is known by its path and the sha256 its manifest records, so a run made again
    under the same name is loaded again, and two names of one checkpoint share one copy.
    """

    def __init__(self, root: str, device: torch.device):
        self.root, self.device = root, device
        self._loaded: collections.OrderedDict[tuple[str, str], object] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # states read from storage, for the tests that check reuse

    def _get(self, name: str, build):
        path = checkpoint_path(self.root, name)
        record = storage.recorded(path)
        if record is None:
            raise UserError(f"{name} has not completed: its final state is not recorded in a manifest yet")
        key = (path, record.sha256)
        with self._lock:
            if key not in self._loaded:
                self._loaded[key] = build(path)
                self.loads += 1
                if len(self._loaded) > CACHED_MODELS:
                    self._loaded.popitem(last=False)
            self._loaded.move_to_end(key)
            return self._loaded[key]

    def inpainter(self, name: str) -> Inpainter:
        return self._get(name, lambda path: Inpainter(model_state(path, self.device, "completion"), self.device))

    def generator(self, name: str) -> torch.nn.Module:
        # The EMA copy of the generator when training kept one: it samples more smoothly.
        return self._get(name, lambda path: generator_from_state(
            model_state(path, self.device, "generator")).to(self.device))
