"""``DetectionCheckpointer``: fvcore's Checkpointer with safe loading and atomic saving."""

from __future__ import annotations

import os
from typing import Any

import torch
from fvcore.common.checkpoint import Checkpointer

from mask2former.utils import comm
from mask2former.utils.file_io import Detectron2Handler, PathManager, atomic_write_temporaries
from mask2former.utils.finite import nonfinite_names

from .io import atomic_write, read_checkpoint
from .matching import IncompatibleKeys, load_state_dict_exact

# Detectron2Handler lives in utils.file_io; re-exported here, where it was first public.
__all__ = ["DetectionCheckpointer", "Detectron2Handler"]

LAST_CHECKPOINT = "last_checkpoint"


class DetectionCheckpointer(Checkpointer):
    """Save and load a model with its training state (optimizer, scheduler, ...).

    ``save(name, **extra)`` writes ``<save_dir>/<name>.pth`` = ``{"model": ..., <each
    checkpointable>: ..., **extra}`` atomically, then the ``last_checkpoint`` tag; before
    writing, it removes the partial files that a killed save of either left behind.
    ``load(path)`` reads ``.pkl`` / ``.pth`` / ``.safetensors`` (see
    :func:`mask2former.checkpoint.read_checkpoint`) and copies weights by exact key names
    (:func:`mask2former.checkpoint.load_state_dict_exact`), skipping weights whose shape
    differs from the model's (fine-tuning to another number of classes). Extra entries
    saved with the checkpoint must be tensors, containers or numbers: ``.pth`` is read with
    ``weights_only=True``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        save_dir: str = "",
        *,
        save_to_disk: bool | None = None,
        **checkpointables: Any,
    ):
        """``save_to_disk`` defaults to "this is the main process" (rank 0 writes)."""
        if save_to_disk is None:
            save_to_disk = comm.is_main_process()
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.path_manager = PathManager  # the package's: detectron2:// and http(s):// resolve

    def load(self, path: str, checkpointables: list[str] | None = None) -> dict[str, Any]:
        """Load the model and the named checkpointables (all when None) from ``path``.

        Returns the checkpoint's other entries (e.g. ``iteration``). An empty path loads
        nothing.
        """
        if not path:
            self.logger.info("No checkpoint given: the model keeps its initialisation")
            return {}
        self.logger.info("Loading checkpoint from %s", path)
        checkpoint = self._load_file(path)
        self._load_model(checkpoint)
        names = self.checkpointables if checkpointables is None else checkpointables
        for name in names:
            if name in checkpoint:
                self.logger.info("Loading %s from %s", name, path)
                self.checkpointables[name].load_state_dict(checkpoint.pop(name))
        return checkpoint

    def _load_file(self, filename: str) -> dict[str, Any]:
        checkpoint = read_checkpoint(filename)
        checkpoint["__source__"] = filename
        return checkpoint

    def _load_model(self, checkpoint: dict[str, Any]) -> IncompatibleKeys:
        source = checkpoint.pop("__source__", "checkpoint")
        state_dict = checkpoint.pop("model")
        return load_state_dict_exact(self.model, state_dict, source)

    def save(self, name: str, **extra: Any) -> None:
        """Write ``<save_dir>/<name>.pth`` atomically and tag it as the last checkpoint.

        Raises ``FloatingPointError`` and writes nothing if a model tensor has a NaN or inf
        entry: the last good checkpoint and ``last_checkpoint`` are left as they were.
        """
        if not self.save_dir:
            return
        data = {"model": self.model.state_dict()}
        # every process checks (a diverged model is the same on all), so all stop together
        _check_finite(
            data["model"], os.path.join(self.save_dir, f"{name}.pth"), extra.get("iteration")
        )
        if not self.save_to_disk:
            return
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(extra)
        basename = f"{name}.pth"
        if os.path.basename(basename) != basename:
            raise ValueError(f"checkpoint name must be a file name, got {name!r}")
        os.makedirs(self.save_dir, exist_ok=True)
        self._remove_partial_saves()
        filename = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", filename)
        with atomic_write(filename) as f:
            torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def _remove_partial_saves(self) -> None:
        """Remove ``save_dir``'s temporary files of checkpoints and ``last_checkpoint`` (see
        :func:`mask2former.utils.file_io.atomic_write`), left by a save that was killed.

        Done when saving, not when the checkpointer is created: an evaluation run on the
        same directory (``--eval-only``) must not remove a running training's file in
        progress. This process's own saves run one at a time.
        """
        temporaries = atomic_write_temporaries(self.save_dir)
        stale = [
            name
            for name, target in temporaries.items()
            if target == LAST_CHECKPOINT or target.endswith(".pth")
        ]
        for name in stale:
            os.remove(os.path.join(self.save_dir, name))
        if stale:
            self.logger.info(
                "Removed partial files of interrupted checkpoint saves from %s: %s",
                self.save_dir,
                ", ".join(stale),
            )

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Atomically write ``<save_dir>/last_checkpoint`` naming the latest checkpoint."""
        with atomic_write(os.path.join(self.save_dir, LAST_CHECKPOINT)) as f:
            f.write(last_filename_basename.encode("utf-8"))


def _check_finite(state_dict: dict[str, torch.Tensor], filename: str, iteration: Any) -> None:
    bad = nonfinite_names(state_dict.items())
    if not bad:
        return
    at = f" (iteration {iteration})" if iteration is not None else ""
    raise FloatingPointError(
        f"Not saving checkpoint {filename}{at}: {len(bad)} of {len(state_dict)} model tensors "
        f"have NaN or inf values, e.g. {', '.join(bad[:5])}; the model has diverged. The "
        f"previous checkpoint and {LAST_CHECKPOINT} are left as they were."
    )
