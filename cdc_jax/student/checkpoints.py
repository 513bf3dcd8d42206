"""Checkpoints: orbax CheckpointManager for train state + run metadata.

Layout: ``<model_dir>/checkpoints/<step>/{state,meta}``. ``state`` holds
``{"step", "params", "opt_state"}``; ``meta`` is JSON with what a restart
needs beyond arrays (batches consumed, so the data resumes where it stopped).
Saves are synchronous and atomic (orbax writes to a temporary directory and
renames), so a process killed at any time leaves only complete checkpoints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

CHECKPOINTS_SUBDIR = "checkpoints"


def checkpoint_dir(model_dir: str | os.PathLike) -> Path:
  """Where a run's checkpoints live: ``<model_dir>/checkpoints``."""
  return Path(model_dir) / CHECKPOINTS_SUBDIR


class Checkpointer:
  """Saves and restores a run's checkpoints; keeps the last ``keep`` (None: all).

  The training loop decides when to save and passes its ``keep_checkpoints``
  (set in ``gin/runs/train.gin``).
  """

  def __init__(self, model_dir: str | os.PathLike, *, keep: int | None = None):
    self.directory = checkpoint_dir(model_dir).absolute()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    """The step of the newest checkpoint (None: there is none)."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """The steps of every checkpoint kept, in order."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    """Writes ``state`` (arrays) and ``meta`` (JSON) as step ``step``; returns when written."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(dict(state)), meta=ocp.args.JsonSave(dict(meta))), force=True)
    self._manager.wait_until_finished()

  def restore(self, step: int, target: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restores ``step`` into arrays shaped and sharded like ``target``; ``(state, meta)``.

    ``target``: ``jax.ShapeDtypeStruct`` s with shardings (e.g.
    ``Trainer.abstract_state()``), or arrays to take them from. Each process
    reads only the shards its devices hold.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, dict(target))
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]

  def close(self) -> None:
    self._manager.close()


def find_checkpoint(path: str | os.PathLike, step: int | None = None) -> tuple[Path, int]:
  """``(checkpoints_dir, step)`` for a model dir, its checkpoints dir or one step dir."""
  path = Path(path).absolute()
  candidates = [path / CHECKPOINTS_SUBDIR, path]
  if path.name.isdigit():
    candidates.append(path.parent)
    step = int(path.name) if step is None else step
  for directory in candidates:
    steps = sorted(int(p.name) for p in directory.glob("*") if p.name.isdigit()) \
        if directory.is_dir() else []
    if steps:
      chosen = steps[-1] if step is None else step
      if chosen not in steps:
        raise FileNotFoundError(f"no checkpoint for step {chosen} in {directory}; have {steps}")
      return directory, chosen
  raise FileNotFoundError(f"no orbax checkpoint found at {path}")


def restore_params(path: str | os.PathLike, step: int | None = None) -> tuple[Any, int]:
  """The parameters (numpy arrays, host memory) of a checkpoint, and its step."""
  directory, step = find_checkpoint(path, step)
  with ocp.CheckpointManager(directory, item_names=("state", "meta"),
                             options=ocp.CheckpointManagerOptions(read_only=True)) as manager:
    metadata = manager.item_metadata(step)["state"]
    # Onto this process's first device, whatever mesh (or hosts) saved it.
    here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here) if hasattr(m, "shape")
        else m, metadata, is_leaf=lambda m: hasattr(m, "shape"))
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract, fallback_sharding=here)))
  return jax.tree.map(np.asarray, restored["state"]["params"]), step


def restore_meta(path: str | os.PathLike, step: int | None = None) -> dict[str, Any]:
  """The JSON metadata saved with a checkpoint (``{}`` where it has none)."""
  directory, step = find_checkpoint(path, step)
  with ocp.CheckpointManager(directory, item_names=("state", "meta"),
                             options=ocp.CheckpointManagerOptions(read_only=True)) as manager:
    if not (directory / str(step) / "meta").exists():
      return {}
    return dict(manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])


def check_base_weights(meta: Mapping[str, Any], expected: str | None, source: Any) -> None:
  """Refuses trained parameters that belong to other base weights than ``expected``.

  A LoRA checkpoint holds adapters only: applied to other base weights they
  would silently compute something else. ``expected`` is the sha256 of the
  model's base weights file(s) (None: the model has no pretrained base).
  """
  saved = meta.get("base_weights")
  if saved != expected:
    raise ValueError(f"{source}: the checkpoint was trained on base weights {saved or 'none'} "
                     f"but this model loads {expected or 'none'} (sha256); load the weights it "
                     "was trained from")
