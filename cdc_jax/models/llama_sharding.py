"""Logical-axis rules and a mesh for the teacher decoder.

The teacher names every parameter and activation axis (``embed``, ``heads``,
``mlp``, ...). These rules map those names onto a ``(data, model)`` mesh:
batch over ``data``, heads / MLP / vocabulary over ``model`` (Megatron style),
the embedding dimension replicated so no all-gather sits on the residual path.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np

from cdc_jax.models import partitioning

# The project's one partitioning table (``cdc_jax.models.partitioning``).
TEACHER_RULES: tuple[tuple[str, str | None], ...] = partitioning.DEFAULT_RULES


def make_teacher_mesh(
    shape: Sequence[int] = (1, 1),
    *,
    axis_names: Sequence[str] = ("data", "model"),
    devices: Sequence[jax.Device] | None = None,
) -> jax.sharding.Mesh:
  """A GSPMD-style (Auto axes) mesh of ``shape`` over ``devices`` (default: all)."""
  devices = list(jax.devices() if devices is None else devices)
  size = int(np.prod(shape))
  if size != len(devices):
    raise ValueError(f"mesh shape {tuple(shape)} needs {size} devices, got {len(devices)}")
  return jax.sharding.Mesh(
      np.asarray(devices).reshape(tuple(shape)), tuple(axis_names),
      axis_types=(jax.sharding.AxisType.Auto,) * len(shape))


def param_shardings(
    abstract_params: object,
    mesh: jax.sharding.Mesh,
    rules: Sequence[tuple[str, str | None]] = TEACHER_RULES,
) -> object:
  """NamedShardings for a (boxed, abstract) param tree from its logical axis names."""
  logical = nn.get_partition_spec(abstract_params)
  partitioning.check_rules_cover(logical, tuple(rules))
  return nn.logical_to_mesh_sharding(logical, mesh, list(rules))


def place(value: np.ndarray, target: jax.sharding.Sharding, dtype: object = None) -> jax.Array:
  """``value`` (host memory, possibly memory-mapped) as a global array with ``target`` sharding.

  Each device's slice is read (and cast to ``dtype``) on its own, so a sharded
  load never holds more than one device's share of a converted tensor, and on
  a multi-host mesh every process supplies only its own devices' slices.
  """
  return jax.make_array_from_callback(
      value.shape, target, lambda index: np.asarray(value[index], dtype=dtype, order="C"))
