"""The one place that maps logical axis names to mesh axes.

Models name the axes of every parameter and main activation ('batch',
'embed', 'mlp', ...). Here those names become mesh axes of a (data, model)
mesh: the batch is split over 'data', the wide dimensions (MLP hidden units,
heads, vocabulary) over 'model', and everything else is replicated. With a
model axis of size 1 this is plain data parallelism.

Typical use::

  mesh = partitioning.make_mesh((-1, 2))
  logical = model.param_logical_axes(input_shapes)
  shardings = partitioning.param_shardings(logical, mesh)
  params = jax.jit(functools.partial(model.init_params, input_shapes=input_shapes),
                   out_shardings=shardings)(rng)
  with partitioning.activate(mesh):   # activation constraints apply when traced here
    loss, metrics = jax.jit(model.loss_fn)(params, partitioning.shard_batch(batch, mesh), None)
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LogicalRules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

DEFAULT_AXIS_NAMES = ("data", "model")

# Every logical name the models use is listed, so an unknown name is an error
# in `check_rules_cover` rather than a silently replicated axis.
# One table for the T5 student, the Llama student and the Llama teacher: the
# batch over 'data', heads / MLP / vocabulary over 'model' (Megatron style),
# the embedding dimension replicated so no all-gather sits on the residual path.
DEFAULT_RULES: LogicalRules = (
    ("batch", "data"),
    ("vocab", "model"),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv_heads", "model"),
    ("joined_kv", "model"),
    ("kv", None),
    ("embed", None),
    ("length", None),
    ("cache_length", None),
    ("relpos_buckets", None),
    ("lora_rank", None),
)


def make_mesh(shape: Sequence[int] = (-1, 1),
              axis_names: Sequence[str] = DEFAULT_AXIS_NAMES, *,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over ``devices`` (default: all) with GSPMD-style Auto axes.

  Args:
    shape: size of each mesh axis; one entry may be -1 to take the devices
      left over, e.g. (-1, 1) for pure data parallelism.
    axis_names: names of the mesh axes, matching the rules' targets.
    devices: the devices to use; default ``jax.devices()``.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = list(shape)
  if len(shape) != len(axis_names):
    raise ValueError(f"mesh shape {tuple(shape)} and axis_names {tuple(axis_names)} "
                     "differ in length")
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"mesh shape {tuple(shape)}: sizes must be positive, at most one -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f"mesh shape {tuple(shape)} does not divide {len(devices)} devices")
    shape[shape.index(-1)] = len(devices) // known
  if math.prod(shape) != len(devices):
    raise ValueError(f"mesh shape {tuple(shape)} needs {math.prod(shape)} devices, "
                     f"have {len(devices)}")
  return jax.make_mesh(tuple(shape), tuple(axis_names),
                       axis_types=(jax.sharding.AxisType.Auto,) * len(shape),
                       devices=devices)


def rules_for_mesh(mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> LogicalRules:
  """``rules`` with targets that are not axes of ``mesh`` replaced by None (replicated)."""

  def keep(target: Any) -> Any:
    if target is None:
      return None
    if isinstance(target, str):
      return target if target in mesh.axis_names else None
    kept = tuple(t for t in target if t in mesh.axis_names)
    return kept or None

  return tuple((name, keep(target)) for name, target in rules)


def check_rules_cover(logical_axes: Any, rules: LogicalRules = DEFAULT_RULES) -> None:
  """Raises if a logical name in ``logical_axes`` (a PartitionSpec tree) has no rule."""
  known = {name for name, _ in rules}
  missing = set()
  for spec in jax.tree_util.tree_leaves(logical_axes,
                                        is_leaf=lambda x: isinstance(x, PartitionSpec)):
    for name in spec:
      for part in (name if isinstance(name, tuple) else (name,)):
        if part is not None and part not in known:
          missing.add(part)
  if missing:
    raise ValueError(f"logical axis names without a partitioning rule: {sorted(missing)}; "
                     f"rules cover {sorted(known)}")


def mesh_spec(logical: Sequence[str | None], mesh: Mesh,
              rules: LogicalRules = DEFAULT_RULES) -> PartitionSpec:
  """The mesh PartitionSpec of one array's logical axis names."""
  return nn.logical_to_mesh_axes(tuple(logical), rules_for_mesh(mesh, rules))


def param_shardings(logical_axes: Any, mesh: Mesh, *,
                    rules: LogicalRules = DEFAULT_RULES) -> Any:
  """NamedSharding tree for a tree of logical PartitionSpecs (from ``nn.get_partition_spec``)."""
  check_rules_cover(logical_axes, rules)
  return nn.logical_to_mesh_sharding(logical_axes, mesh, rules_for_mesh(mesh, rules))


def batch_shardings(batch: Any, mesh: Mesh, *, rules: LogicalRules = DEFAULT_RULES) -> Any:
  """NamedSharding tree splitting the leading (batch) axis of every leaf of ``batch``.

  ``batch`` may hold arrays or ``jax.ShapeDtypeStruct``s; scalars are replicated.
  """

  def one(leaf: Any) -> NamedSharding:
    ndim = len(np.shape(leaf)) if not hasattr(leaf, "ndim") else leaf.ndim
    if ndim == 0:
      return NamedSharding(mesh, PartitionSpec())
    return NamedSharding(mesh, mesh_spec(("batch",) + (None,) * (ndim - 1), mesh, rules))

  return jax.tree_util.tree_map(one, batch)


def replicated(mesh: Mesh) -> NamedSharding:
  """A fully replicated sharding on ``mesh`` (scalars, step counters)."""
  return NamedSharding(mesh, PartitionSpec())


def shard_batch(batch: Any, mesh: Mesh, *, rules: LogicalRules = DEFAULT_RULES) -> Any:
  """``batch`` (host arrays) placed on ``mesh``, split along the batch axis."""
  return jax.device_put(batch, batch_shardings(batch, mesh, rules=rules))


@contextlib.contextmanager
def activate(mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> Iterator[None]:
  """Context in which the models' activation constraints bind to ``mesh``.

  Functions must be traced (first called under jit) inside this context for
  ``nn.with_logical_constraint`` to take effect; outside it they are no-ops
  and GSPMD propagates shardings from the inputs alone.
  """
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules_for_mesh(mesh, rules)):
    yield
