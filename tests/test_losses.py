"""The shared token loss: cross-entropy, z-loss, token accuracy and their gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cdc_jax.models import losses


def _batch(rng, rows=3, length=5, vocab=11):
  targets = rng.integers(1, vocab, size=(rows, length)).astype(np.int32)
  targets[0, -1:] = 0  # Padding: weight 0.
  weights = (targets > 0).astype(np.float32)
  weights[-1, 0] = 0.0  # A prompt token: weight 0 although it is not padding.
  return {"decoder_target_tokens": jnp.asarray(targets),
          "decoder_loss_weights": jnp.asarray(weights)}


def _reference(logits, batch, z_loss):
  """The loss from optax's cross-entropy and jax.nn.logsumexp, metrics from argmax."""
  targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
  cross_ent = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  total = jnp.sum((cross_ent + z_loss * log_z ** 2) * weights) / jnp.sum(weights)
  correct = jnp.sum((jnp.argmax(logits, axis=-1) == targets) * weights)
  return total, correct


def test_loss_accuracy_and_gradient_match_a_reference():
  rng = np.random.default_rng(0)
  batch = _batch(rng)
  logits = jnp.asarray(rng.normal(size=(3, 5, 11)) * 3.0, jnp.float32)
  # Make some targets the argmax so that the accuracy is neither 0 nor 1.
  hit = np.asarray(logits).copy()
  hit[2, :, :] = -5.0
  hit[2, np.arange(5), np.asarray(batch["decoder_target_tokens"])[2]] = 5.0
  logits = jnp.asarray(hit)

  loss, metrics = losses.token_loss(logits, batch, z_loss=1e-2)
  ref_loss, ref_correct = _reference(logits, batch, 1e-2)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  assert float(metrics["num_correct"]) == float(ref_correct) >= 5
  assert float(metrics["num_tokens"]) == float(jnp.sum(batch["decoder_loss_weights"]))
  np.testing.assert_allclose(metrics["accuracy"], ref_correct / metrics["num_tokens"], rtol=1e-6)

  grad = jax.grad(lambda x: losses.token_loss(x, batch, z_loss=1e-2)[0])(logits)
  ref_grad = jax.grad(lambda x: _reference(x, batch, 1e-2)[0])(logits)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)
  # Tokens of weight 0 get no gradient.
  assert not np.any(np.asarray(grad)[0, -1]) and not np.any(np.asarray(grad)[-1, 0])


def test_loss_is_stable_for_large_logits():
  batch = {"decoder_target_tokens": jnp.asarray([[1, 1]], jnp.int32),
           "decoder_loss_weights": jnp.ones((1, 2), jnp.float32)}
  logits = jnp.asarray([[[1e4, 0.0, -1e4, 3.0], [2e4, 2e4 - 1.0, 0.0, 0.0]]], jnp.float32)
  loss, metrics = losses.token_loss(logits, batch, z_loss=0.0)
  ref_loss, _ = _reference(logits, batch, 0.0)
  assert np.isfinite(float(loss))
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  # Target 1 against logits 1e4 (token 0) and 2e4 - 1 against 2e4: 1e4 + 1 nats.
  np.testing.assert_allclose(metrics["cross_ent_sum"], 1e4 + 1.0 + np.log1p(np.exp(-1.0)),
                             rtol=1e-6)
