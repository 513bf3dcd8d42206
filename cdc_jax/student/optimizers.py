"""Optimizers and learning-rate schedules of the T5 recipe (optax).

A run's learning rate is required here: its value lives in gin
(``LEARNING_RATE`` in ``gin/runs/train.gin``) or in the caller.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax


def rsqrt_schedule(*, base_learning_rate: float = 1.0, warmup_steps: int = 10_000) -> optax.Schedule:
  """T5's inverse-square-root decay: ``base / sqrt(max(step, warmup_steps))``.

  With base 1.0 and 10k warm-up steps this is 0.01 for the first 10k steps
  (a constant "warm-up", as in T5), then decays as ``1/sqrt(step)``.
  """
  if warmup_steps < 1:
    raise ValueError(f"warmup_steps must be >= 1, got {warmup_steps}")

  def schedule(step):
    return base_learning_rate / jnp.sqrt(jnp.maximum(jnp.asarray(step, jnp.float32), warmup_steps))
  return schedule


def constant_schedule(*, learning_rate: float) -> optax.Schedule:
  """A constant rate (the usual choice when fine-tuning a pretrained T5)."""
  return optax.constant_schedule(learning_rate)


def adafactor(*, learning_rate: optax.Schedule | float, clip_threshold: float | None = 1.0,
              decay_rate: float = 0.8, weight_decay_rate: float | None = None,
              multiply_by_parameter_scale: bool = True) -> optax.GradientTransformation:
  """Adafactor as T5 uses it (factored second moments, no momentum, update clipping)."""
  return optax.adafactor(learning_rate=learning_rate, clipping_threshold=clip_threshold,
                         decay_rate=decay_rate, weight_decay_rate=weight_decay_rate,
                         multiply_by_parameter_scale=multiply_by_parameter_scale)


def adamw(*, learning_rate: optax.Schedule | float, weight_decay: float = 0.0,
          b1: float = 0.9, b2: float = 0.999) -> optax.GradientTransformation:
  """AdamW, for small students trained from scratch."""
  return optax.adamw(learning_rate=learning_rate, weight_decay=weight_decay, b1=b1, b2=b2)
