"""T5X-style model wrapper: initialisation, loss, decoding and scoring.

Batches are the features of ``seqio.EncDecFeatureConverter``:
``encoder_input_tokens``, ``decoder_input_tokens`` (targets shifted right, 0
first), ``decoder_target_tokens``, optional ``decoder_loss_weights`` (default
``targets > 0``) and, for packed batches, ``encoder_segment_ids`` /
``decoder_segment_ids`` (``*_positions`` are accepted and not needed: the
model's relative positions come from array indices within contiguous
segments). Token 0 is padding and the decoder start token, 1 is EOS.

All methods are pure functions of their array arguments, meant to be wrapped
in ``jax.jit`` by the caller (``max_decode_len`` and ``num_beams`` static).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import seqio

from cdc_jax.models import losses, t5
from cdc_jax.models.t5_config import T5Config

Array = jax.Array
Batch = Mapping[str, Array]
PAD_ID = 0
EOS_ID = 1
_NEG = -1e9  # log-probability of a continuation that must never be chosen


@dataclasses.dataclass(frozen=True, eq=False)
class EncoderDecoderModel:
  """Loss, prediction and scoring for a T5 encoder-decoder module.

  Attributes:
    module: the Flax network (``t5.Transformer``).
    config: its configuration.
    z_loss: coefficient of the auxiliary ``log(Z)**2`` loss per target token,
      which keeps the softmax normaliser near 1 (T5X uses 1e-4).
    loss_normalizing_factor: the summed per-token loss is divided by this
      constant; None divides by the number of weighted target tokens of the
      batch (a per-token mean, identical for packed and unpacked batches).
    eos_id: end-of-sequence id; decoding stops a row after emitting it.
  """
  module: t5.Transformer
  config: T5Config
  _: dataclasses.KW_ONLY
  z_loss: float = 1e-4
  loss_normalizing_factor: float | None = None
  eos_id: int = EOS_ID

  FEATURE_CONVERTER_CLS = seqio.EncDecFeatureConverter
  PREDICT_FEATURES = ("encoder_input_tokens",)
  # A T5 trains every parameter from its init (or INIT_FROM): nothing frozen.
  pretrained = None

  def merge_params(self, trainable: Any, frozen: Any) -> Any:
    """The module's parameters: all of them are trained."""
    del frozen
    return trainable

  def frozen_logical_axes(self) -> None:
    return None

  def base_fingerprint(self) -> None:
    return None

  def prompt_features(self, rows: Sequence[Sequence[int]], length: int) -> dict[str, Any]:
    """``PREDICT_FEATURES`` of tokenized inputs (EOS included): the padded encoder inputs."""
    import numpy as np
    out = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
      out[i, :len(row)] = list(row)[:length]
    return {"encoder_input_tokens": out}

  def load_external(self, path: str | os.PathLike) -> Any:
    """Parameters of a Hugging Face T5 checkpoint directory."""
    from cdc_jax.models import hf_t5
    return hf_t5.load_hf_t5(path)[1]

  def _init_variables(self, rng: Array, input_shapes: Mapping[str, Sequence[int]]) -> Any:
    for key in ("encoder_input_tokens", "decoder_input_tokens"):
      if key not in input_shapes:
        raise KeyError(f"input_shapes lacks '{key}'; got {sorted(input_shapes)}")
    encoder = jnp.ones(tuple(input_shapes["encoder_input_tokens"]), jnp.int32)
    decoder = jnp.ones(tuple(input_shapes["decoder_input_tokens"]), jnp.int32)
    return self.module.init({"params": rng}, encoder, decoder, decoder, enable_dropout=False)

  def init_params(self, rng: Array, input_shapes: Mapping[str, Sequence[int]]) -> Any:
    """Fresh float32 parameters (a plain nested dict of arrays).

    Args:
      rng: PRNG key.
      input_shapes: shapes of 'encoder_input_tokens' and
        'decoder_input_tokens' (only used to trace the module).
    """
    return nn.meta.unbox(self._init_variables(rng, input_shapes)["params"])

  def param_logical_axes(self, input_shapes: Mapping[str, Sequence[int]]) -> Any:
    """PartitionSpec tree of logical axis names, same structure as ``init_params``."""
    abstract = jax.eval_shape(lambda rng: self._init_variables(rng, input_shapes),
                              jax.random.key(0))
    return nn.get_partition_spec(abstract["params"])


  def compute_logits(self, params: Any, batch: Batch, dropout_rng: Array | None = None) -> Array:
    """Decoder logits (batch, target_length, vocab); dropout iff ``dropout_rng``."""
    missing = [k for k in ("encoder_input_tokens", "decoder_input_tokens",
                           "decoder_target_tokens") if k not in batch]
    if missing:
      raise KeyError(f"batch lacks feature(s) {missing}; got {sorted(batch)}")
    rngs = None if dropout_rng is None else {"dropout": dropout_rng}
    return self.module.apply(
        {"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
        batch["decoder_target_tokens"], batch.get("encoder_segment_ids"),
        batch.get("decoder_segment_ids"), enable_dropout=dropout_rng is not None, rngs=rngs)

  def loss_fn(self, params: Any, batch: Batch,
              dropout_rng: Array | None) -> tuple[Array, dict[str, Array]]:
    """Weighted token cross-entropy (+ z-loss) and metrics: see ``losses.token_loss``."""
    return losses.token_loss(self.compute_logits(params, batch, dropout_rng), batch,
                             z_loss=self.z_loss,
                             loss_normalizing_factor=self.loss_normalizing_factor)


  @staticmethod
  def _require_unpacked(batch: Batch, what: str) -> None:
    packed = [k for k in ("encoder_segment_ids", "decoder_segment_ids") if k in batch]
    if packed:
      raise ValueError(f"{what} works on one example per row; batch has {packed} "
                       "(use an unpacked feature converter)")

  def score_batch(self, params: Any, batch: Batch) -> Array:
    """Log-likelihood of each row's weighted targets, shape (batch,), float32.

    ``decoder_input_tokens`` defaults to the targets shifted right.
    """
    self._require_unpacked(batch, "score_batch")
    batch = dict(batch)
    batch.setdefault("decoder_input_tokens", shift_right(batch["decoder_target_tokens"]))
    logits = self.compute_logits(params, batch).astype(jnp.float32)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    target_log_probs = jnp.take_along_axis(
        log_probs, batch["decoder_target_tokens"][..., None], axis=-1)[..., 0]
    return jnp.sum(target_log_probs * losses.loss_weights(batch), axis=-1)


  def _start_cache(self, params: Any, encoder_input_tokens: Array, max_decode_len: int) -> Any:
    """Runs the encoder and creates the decoder cache for ``max_decode_len`` steps."""
    placeholder = jnp.zeros((encoder_input_tokens.shape[0], max_decode_len), jnp.int32)
    _, variables = self.module.apply({"params": params}, encoder_input_tokens, placeholder,
                                     enable_dropout=False, decode=True, mutable=["cache"])
    return variables["cache"]

  def _step(self, params: Any, cache: Any, tokens: Array,
            encoder_input_tokens: Array) -> tuple[Array, Any]:
    """Log-probabilities (batch, vocab) of the token after ``tokens`` (batch,)."""
    logits, variables = self.module.apply(
        {"params": params, "cache": cache}, None, encoder_input_tokens, tokens[:, None],
        enable_dropout=False, decode=True, mutable=["cache"], method="decode")
    return jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1), variables["cache"]

  def _greedy(self, params: Any, encoder_input_tokens: Array,
              max_decode_len: int) -> tuple[Array, Array]:
    batch_size = encoder_input_tokens.shape[0]
    cache = self._start_cache(params, encoder_input_tokens, max_decode_len)

    def cond(state):
      step, _, _, finished, _, _ = state
      return (step < max_decode_len) & ~jnp.all(finished)

    def body(state):
      step, token, out, finished, scores, cache = state
      log_probs, cache = self._step(params, cache, token, encoder_input_tokens)
      token = jnp.where(finished, PAD_ID, jnp.argmax(log_probs, axis=-1).astype(jnp.int32))
      token_log_prob = jnp.take_along_axis(log_probs, token[:, None], axis=-1)[:, 0]
      scores = scores + jnp.where(finished, 0.0, token_log_prob)
      out = jax.lax.dynamic_update_slice(out, token[:, None], (0, step))
      return step + 1, token, out, finished | (token == self.eos_id), scores, cache

    state = (jnp.array(0, jnp.int32), jnp.full((batch_size,), PAD_ID, jnp.int32),
             jnp.zeros((batch_size, max_decode_len), jnp.int32), jnp.zeros((batch_size,), bool),
             jnp.zeros((batch_size,), jnp.float32), cache)
    _, _, out, _, scores, _ = jax.lax.while_loop(cond, body, state)
    return out, scores

  def _beam_search(self, params: Any, encoder_input_tokens: Array, max_decode_len: int,
                   num_beams: int) -> tuple[Array, Array]:
    """Keeps the ``num_beams`` best prefixes by summed log-probability.

    A finished beam (EOS emitted) stays in the beam set, extended only by
    padding at no cost, so hypotheses of every length compete on raw
    log-likelihood (no length penalty).
    """
    batch_size, vocab = encoder_input_tokens.shape[0], self.config.vocab_size
    flat_size = batch_size * num_beams
    encoder_tokens = jnp.repeat(encoder_input_tokens, num_beams, axis=0)
    cache = self._start_cache(params, encoder_tokens, max_decode_len)
    pad_only = jnp.where(jnp.arange(vocab) == PAD_ID, 0.0, _NEG)
    # All beams start identical: only the first may expand at step 0.
    scores = jnp.tile(jnp.where(jnp.arange(num_beams) == 0, 0.0, _NEG), (batch_size, 1))

    def cond(state):
      step, _, _, finished, _, _ = state
      return (step < max_decode_len) & ~jnp.all(finished)

    def body(state):
      step, token, seqs, finished, scores, cache = state
      log_probs, cache = self._step(params, cache, token.reshape(flat_size), encoder_tokens)
      log_probs = jnp.where(finished[..., None], pad_only,
                            log_probs.reshape(batch_size, num_beams, vocab))
      candidates = (scores[..., None] + log_probs).reshape(batch_size, num_beams * vocab)
      scores, index = jax.lax.top_k(candidates, num_beams)
      beam, token = index // vocab, (index % vocab).astype(jnp.int32)
      seqs = jnp.take_along_axis(seqs, beam[..., None], axis=1)
      seqs = jax.lax.dynamic_update_slice(seqs, token[..., None], (0, 0, step))
      finished = jnp.take_along_axis(finished, beam, axis=1) | (token == self.eos_id)
      origin = (jnp.arange(batch_size)[:, None] * num_beams + beam).reshape(flat_size)
      # Per-row cache entries (rank >= 2) follow their beam; counters are shared.
      cache = jax.tree_util.tree_map(lambda x: x[origin] if x.ndim >= 2 else x, cache)
      return step + 1, token, seqs, finished, scores, cache

    state = (jnp.array(0, jnp.int32), jnp.full((batch_size, num_beams), PAD_ID, jnp.int32),
             jnp.zeros((batch_size, num_beams, max_decode_len), jnp.int32),
             jnp.zeros((batch_size, num_beams), bool), scores, cache)
    _, _, seqs, _, scores, _ = jax.lax.while_loop(cond, body, state)
    best = jnp.argmax(scores, axis=1)
    rows = jnp.arange(batch_size)
    return seqs[rows, best], scores[rows, best]

  def predict_batch_with_aux(self, params: Any, batch: Batch, *, max_decode_len: int,
                             num_beams: int = 1) -> tuple[Array, dict[str, Array]]:
    """Decoded tokens (batch, max_decode_len) and {'scores': log-likelihood (batch,)}.

    Greedy for ``num_beams == 1``, else beam search. A row ends with its
    first EOS (included) followed by padding 0.
    """
    self._require_unpacked(batch, "predict_batch")
    if "encoder_input_tokens" not in batch:
      raise KeyError(f"batch lacks 'encoder_input_tokens'; got {sorted(batch)}")
    if max_decode_len < 1 or num_beams < 1:
      raise ValueError(f"max_decode_len ({max_decode_len}) and num_beams ({num_beams}) "
                       "must be positive")
    tokens = batch["encoder_input_tokens"]
    if num_beams == 1:
      out, scores = self._greedy(params, tokens, max_decode_len)
    else:
      out, scores = self._beam_search(params, tokens, max_decode_len, num_beams)
    return out, {"scores": scores}

  def predict_batch(self, params: Any, batch: Batch, *, max_decode_len: int,
                    num_beams: int = 1) -> Array:
    """Decoded tokens (batch, max_decode_len); see ``predict_batch_with_aux``."""
    return self.predict_batch_with_aux(params, batch, max_decode_len=max_decode_len,
                                       num_beams=num_beams)[0]


def shift_right(targets: Array) -> Array:
  """Decoder inputs of unpacked targets: 0 (the start token), then targets[:-1]."""
  return jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]


def build_model(config: T5Config, *, z_loss: float = 1e-4,
                loss_normalizing_factor: float | None = None,
                eos_id: int = EOS_ID) -> EncoderDecoderModel:
  """The T5 encoder-decoder of ``config`` wrapped for training and inference."""
  return EncoderDecoderModel(t5.Transformer(config), config, z_loss=z_loss,
                             loss_normalizing_factor=loss_normalizing_factor, eos_id=eos_id)
