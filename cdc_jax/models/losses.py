"""The token loss every student shares: weighted cross-entropy, z-loss and summed metrics."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

Array = jax.Array


def loss_weights(batch: Mapping[str, Array]) -> Array:
  """``decoder_loss_weights`` as float32, or 1 on every non-padding target token."""
  weights = batch.get("decoder_loss_weights")
  if weights is None:
    weights = batch["decoder_target_tokens"] > 0
  return jnp.asarray(weights, jnp.float32)


def token_loss(logits: Array, batch: Mapping[str, Array], *, z_loss: float,
               loss_normalizing_factor: float | None = None) -> tuple[Array, dict[str, Array]]:
  """Weighted token cross-entropy (+ z-loss) of ``logits`` against ``decoder_target_tokens``.

  loss = sum_t w_t * (-log p(y_t) + z_loss * log(Z_t)**2) / N, where N is
  ``loss_normalizing_factor`` or, if None, sum_t w_t (a per-token mean,
  identical for packed and unpacked batches).

  Returns:
    (loss, metrics) with metrics 'loss', 'cross_ent_loss', 'z_loss' (the two
    parts of loss), 'accuracy' (weighted share of tokens whose target has the largest logit), and
    sums for exact aggregation over batches: 'num_tokens' (sum of weights),
    'num_correct', 'cross_ent_sum', 'num_examples' (segments in a packed
    batch, rows with a weighted token otherwise).
  """
  logits = logits.astype(jnp.float32)
  targets = batch["decoder_target_tokens"]
  weights = loss_weights(batch)
  # One max serves the log-sum-exp (shifted for stability; the shift carries no gradient, the
  # log-sum-exp does not depend on it) and the accuracy: a token is right when its target's logit
  # is the largest. That replaces an argmax over the vocabulary, measured at 0.09 s of a 1.65 s
  # SmolLM2 LoRA step (8 layers, batch 8 x 128, 2-core Xeon). A tie with the target counts as
  # right, where argmax would pick the first index.
  max_logits = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
  log_z = max_logits + jnp.log(jnp.sum(jnp.exp(logits - max_logits[..., None]), axis=-1))
  target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  cross_ent_sum = jnp.sum((log_z - target_logits) * weights)
  z_loss_sum = jnp.sum(z_loss * jnp.square(log_z) * weights)
  num_tokens = jnp.sum(weights)
  if loss_normalizing_factor is None:
    normalizer = jnp.maximum(num_tokens, 1.0)
  else:
    normalizer = jnp.asarray(loss_normalizing_factor, jnp.float32)
  num_correct = jnp.sum((target_logits >= max_logits) * weights)
  if "decoder_segment_ids" in batch:
    # seqio numbers the segments of a packed row 1, 2, ...
    num_examples = jnp.sum(jnp.max(batch["decoder_segment_ids"], axis=-1))
  else:
    num_examples = jnp.sum(jnp.any(weights > 0, axis=-1))
  loss = (cross_ent_sum + z_loss_sum) / normalizer
  return loss, {
      "loss": loss, "cross_ent_loss": cross_ent_sum / normalizer,
      "z_loss": z_loss_sum / normalizer,
      "accuracy": num_correct / jnp.maximum(num_tokens, 1.0),
      "num_tokens": num_tokens, "num_correct": num_correct, "cross_ent_sum": cross_ent_sum,
      "num_examples": num_examples.astype(jnp.float32)}
