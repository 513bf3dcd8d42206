"""The trainer: train state, sharded initialisation and the jitted train step.

Parameters are placed by their logical axis names (``cdc_jax.models.partitioning``);
the optimizer state follows the parameters; batches are split over 'data'.
The state holds the *trained* parameters only: a model with frozen weights
(a LoRA student's pretrained base, ``model.pretrained.frozen``) gets them
placed once beside the state and combined by ``model.merge_params`` in the step.
The step averages gradients over ``accumulation_steps`` micro-batches, applies
the optimizer and returns summed metrics. Entry points own the loop.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from cdc_jax.models import partitioning

State = dict[str, Any]  # {"step": int32 scalar, "params": tree, "opt_state": tree}


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or infinite loss."""


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
  """Knobs of the train step.

  Attributes:
    accumulation_steps: micro-batches whose gradients are averaged per step.
    dropout_seed: seed of the dropout PRNG (folded with the step).
  """
  accumulation_steps: int = 1
  dropout_seed: int = 0


class Trainer:
  """Initialises or restores the train state and runs jitted train steps."""

  def __init__(self, model: Any, optimizer: optax.GradientTransformation,
               mesh: Mesh, input_shapes: Mapping[str, tuple[int, ...]], *,
               config: TrainerConfig = TrainerConfig(),
               learning_rate_fn: optax.Schedule | None = None):
    self.model, self.optimizer, self.mesh, self.config = model, optimizer, mesh, config
    self.learning_rate_fn = learning_rate_fn
    self.input_shapes = dict(input_shapes)
    batch = next(iter(self.input_shapes.values()))[0]
    if batch % config.accumulation_steps:
      raise ValueError(f"batch size {batch} is not divisible by accumulation_steps "
                       f"{config.accumulation_steps}")
    logical = model.param_logical_axes(self.input_shapes)
    self.param_shardings = partitioning.param_shardings(logical, mesh)
    self.replicated = partitioning.replicated(mesh)
    pretrained = getattr(model, "pretrained", None)
    self.pretrained = None if pretrained is None else pretrained.trainable
    self.frozen = None
    if pretrained is not None and pretrained.frozen is not None:
      self.frozen = jax.device_put(pretrained.frozen, partitioning.param_shardings(
          model.frozen_logical_axes(), mesh))
    self._step_fn = None
    self._opt_init = None

  # --- State ------------------------------------------------------------------

  def _abstract_params(self) -> Any:
    """Shapes and dtypes of the trained parameters (``jax.eval_shape``: nothing is computed)."""
    if self.pretrained is not None:
      return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), self.pretrained)
    init = functools.partial(self.model.init_params, input_shapes=self.input_shapes)
    return jax.eval_shape(init, jax.random.key(0, impl="unsafe_rbg"))

  @functools.cached_property
  def state_shardings(self) -> Mapping[str, Any]:
    """Where each leaf of the state lives: parameters by their logical axes; the optimizer
    state where XLA places what ``optimizer.init`` makes of them (replicated where off the mesh)."""
    params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          self._abstract_params(), self.param_shardings)
    with partitioning.activate(self.mesh):
      # Compiled once: its output shardings are the optimizer state's, and it initialises it.
      self._opt_init = jax.jit(self.optimizer.init).lower(params).compile()
    return {"step": self.replicated, "params": self.param_shardings,
            "opt_state": jax.tree.map(self._on_mesh, self._opt_init.output_shardings)}

  def _on_mesh(self, sharding: jax.sharding.Sharding) -> NamedSharding:
    # Leaves the optimizer creates from constants (counts) may land on one
    # device; everything not already on this mesh is replicated on it.
    if isinstance(sharding, NamedSharding) and sharding.mesh.shape_tuple == self.mesh.shape_tuple \
        and sharding.mesh.devices.tolist() == self.mesh.devices.tolist():
      return sharding
    return self.replicated

  def abstract_state(self) -> State:
    """The state as ``jax.ShapeDtypeStruct`` s with their shardings: the target of a restore.

    Built with ``jax.eval_shape``, so resuming a run initialises nothing that
    the checkpoint then overwrites.
    """
    shardings = self.state_shardings
    abstract_params = self._abstract_params()
    params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          abstract_params, shardings["params"])
    opt_state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                             jax.eval_shape(self.optimizer.init, abstract_params),
                             shardings["opt_state"])
    return {"step": jax.ShapeDtypeStruct((), jnp.int32, sharding=self.replicated),
            "params": params, "opt_state": opt_state}

  def init_state(self, seed: int, *, params: Any = None) -> State:
    """A fresh state on the mesh, for a run that has no checkpoint yet.

    Its parameters are ``params`` (weights to start from, shaped like
    :meth:`abstract_state`'s), else the model's pretrained weights (full
    fine-tuning), else a random init from ``seed``.
    """
    shardings = self.state_shardings
    with partitioning.activate(self.mesh):
      if params is None and self.pretrained is not None:
        params = self.pretrained
      if params is not None:
        params = jax.device_put(params, shardings["params"])
      else:
        # The rbg generator compiles in a fraction of threefry's time on CPU
        # (seconds per run); initial values are deterministic per seed and backend.
        init = functools.partial(self.model.init_params, input_shapes=self.input_shapes)
        key = jax.random.key(seed, impl="unsafe_rbg")
        params = jax.jit(init, out_shardings=shardings["params"])(key)
      opt_state = jax.device_put(self._opt_init(params), shardings["opt_state"])
    return {"step": jax.device_put(jnp.zeros((), jnp.int32), self.replicated),
            "params": params, "opt_state": opt_state}

  # --- Step -------------------------------------------------------------------

  def _train_step(self, state: State, batch: Mapping[str, jax.Array],
                  frozen: Any) -> tuple[State, dict]:
    accum = self.config.accumulation_steps
    rng = jax.random.fold_in(jax.random.key(self.config.dropout_seed), state["step"])

    def loss_fn(params, micro_batch, dropout_rng):
      return self.model.loss_fn(self.model.merge_params(params, frozen), micro_batch, dropout_rng)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def micro(i, micro_batch):
      (_, metrics), grads = grad_fn(state["params"], micro_batch, jax.random.fold_in(rng, i))
      return grads, metrics

    if accum == 1:
      grads, metrics = micro(0, batch)
    else:
      split = jax.tree.map(lambda x: x.reshape((accum, x.shape[0] // accum) + x.shape[1:]), batch)

      def body(carry, xs):
        i, mb = xs
        grads, metrics = micro(i, mb)
        return jax.tree.map(jnp.add, carry, (grads, metrics)), None

      zeros = jax.eval_shape(lambda: micro(0, jax.tree.map(lambda x: x[0], split)))
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zeros)
      (grads, metrics), _ = jax.lax.scan(body, zeros, (jnp.arange(accum), split))
      grads = jax.tree.map(lambda g: g / accum, grads)
      for key in ("loss", "cross_ent_loss", "z_loss", "accuracy"):
        if key in metrics:
          metrics[key] = metrics[key] / accum
    updates, opt_state = self.optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = dict(metrics)
    metrics["grad_norm"] = optax.tree.norm(grads)
    if self.learning_rate_fn is not None:
      metrics["learning_rate"] = self.learning_rate_fn(state["step"])
    return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics

  def train_step(self, state: State, batch: Mapping[str, jax.Array]) -> tuple[State, dict]:
    """One optimizer step on a global batch already placed on the mesh."""
    if self._step_fn is None:
      batch_shardings = partitioning.batch_shardings(batch, self.mesh)
      frozen_shardings = jax.tree.map(lambda x: x.sharding, self.frozen)
      with partitioning.activate(self.mesh):
        self._step_fn = jax.jit(self._train_step,
                                in_shardings=(self.state_shardings, batch_shardings,
                                              frozen_shardings),
                                out_shardings=(self.state_shardings, self.replicated),
                                donate_argnums=(0,))
    with partitioning.activate(self.mesh):
      return self._step_fn(state, batch, self.frozen)

  def place_batch(self, local_batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's rows of a batch -> one global array per feature on the mesh."""
    shardings = partitioning.batch_shardings(local_batch, self.mesh)
    if jax.process_count() == 1:
      return jax.device_put(dict(local_batch), shardings)
    return {k: jax.make_array_from_process_local_data(shardings[k], v)
            for k, v in local_batch.items()}


def check_finite(losses: list[tuple[int, Any]]) -> None:
  """Raises :class:`NonFiniteLossError` naming the first step whose loss is not finite."""
  for step, loss in losses:
    value = float(loss)
    if not np.isfinite(value):
      raise NonFiniteLossError(f"non-finite loss {value} at step {step}")
