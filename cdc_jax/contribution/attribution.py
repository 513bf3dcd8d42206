"""Key-token minimisation by attribution: which rationale words a trained student uses.

The student reads ``question + rationale`` as its input and is scored on the
answer as its target. A word's score is **gradient x input** summed over its
sub-word pieces p and the embedding dimension:

    score(word) = sum_{p in word} < d log P(answer | input) / d x_p , x_p >

where x_p is the encoder's input embedding of piece p. It is the first-order
estimate of how much the answer's log-likelihood drops if the piece were
zeroed, so positive words support the answer. The key_tokens selector keeps
the k highest-scoring words (``absolute=True`` ranks by magnitude instead);
ties go to the later word, as in the salience rule; kept words stay in order.
Words cut off by ``input_length`` score -inf.

    selector = register_attribution_selector(checkpoint=MODEL_DIR, model=model,
                                             vocabulary=vocab)
    formats.render_example(fmt="key_tokens", selector="attribution", ...)
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cdc_jax.models import t5
from cdc_jax.models.encoder_decoder import EncoderDecoderModel
from cdc_jax.tasks import formats

EOS_ID = 1


def _answer_log_likelihood(model: EncoderDecoderModel, params: Any, batch: Mapping[str, jax.Array],
                           delta: jax.Array) -> jax.Array:
  """Summed log-likelihood of the targets with ``delta`` added to the encoder embeddings."""

  def add_delta(next_fun, args, kwargs, context) -> Any:
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, t5.Embed) and context.method_name == "__call__":
      return out + delta.astype(out.dtype)
    return out

  tokens = batch["encoder_input_tokens"]
  # Only the encoder's embedding lookup is perturbed: the decoder is applied separately.
  with nn.intercept_methods(add_delta):
    encoded = model.module.apply({"params": params}, tokens, method="encode")
  targets = batch["decoder_target_tokens"]
  decoder_inputs = jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]
  logits = model.module.apply({"params": params}, encoded, tokens, decoder_inputs, targets,
                              method="decode").astype(jnp.float32)
  log_probs = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), targets[..., None],
                                  axis=-1)[..., 0]
  return jnp.sum(log_probs * (targets > 0))


@functools.partial(jax.jit, static_argnums=0)
def _token_attributions(model: EncoderDecoderModel, params: Any,
                        batch: Mapping[str, jax.Array]) -> jax.Array:
  tokens = batch["encoder_input_tokens"]
  embedding = params["token_embedder"]["embedding"]
  inputs = jnp.take(embedding, tokens, axis=0)
  grads = jax.grad(lambda d: _answer_log_likelihood(model, params, batch, d))(
      jnp.zeros(inputs.shape, jnp.float32))
  return jnp.sum(grads * inputs, axis=-1) * (tokens > 0)


def token_attributions(model: EncoderDecoderModel, params: Any,
                       batch: Mapping[str, np.ndarray]) -> np.ndarray:
  """Gradient x input per encoder token, (batch, input_length) float32; padding scores 0.

  ``batch`` holds unpacked ``encoder_input_tokens`` and ``decoder_target_tokens``.
  """
  batch = {k: jnp.asarray(batch[k], jnp.int32)
           for k in ("encoder_input_tokens", "decoder_target_tokens")}
  return np.asarray(_token_attributions(model, params, batch))


def _encode(vocabulary: Any, text: str) -> list[int]:
  return list(vocabulary.encode(text)) if text.strip() else []


def word_attributions(model: EncoderDecoderModel, params: Any, vocabulary: Any, *,
                      question: str, words: Sequence[str], answer: str,
                      input_length: int = 128, target_length: int = 16) -> np.ndarray:
  """Attribution of each rationale word (its pieces summed), shape (len(words),).

  Inputs are ``question`` then the words (each tokenized alone, which equals
  SentencePiece's in-context pieces since pieces never cross spaces), then
  EOS, padded to ``input_length``; the target is the answer then EOS.
  """
  pieces = _encode(vocabulary, " ".join(question.split()))
  spans = []
  for word in words:
    ids = _encode(vocabulary, word)
    spans.append((len(pieces), len(pieces) + len(ids)))
    pieces += ids
  inputs = (pieces[:input_length - 1] + [EOS_ID])
  targets = (_encode(vocabulary, answer)[:target_length - 1] + [EOS_ID])
  batch = {"encoder_input_tokens": np.zeros((1, input_length), np.int32),
           "decoder_target_tokens": np.zeros((1, target_length), np.int32)}
  batch["encoder_input_tokens"][0, :len(inputs)] = inputs
  batch["decoder_target_tokens"][0, :len(targets)] = targets
  per_token = token_attributions(model, params, batch)[0]
  limit = input_length - 1
  return np.array([per_token[start:end].sum() if end <= limit and end > start else -np.inf
                   for start, end in spans], np.float64)


@dataclasses.dataclass(frozen=True, eq=False)
class AttributionSelector:
  """A key-token selector ``(tokens, *, question, answer, k) -> indices`` by attribution.

  Attributes:
    model: the student.
    params: its parameters (a tree of arrays).
    vocabulary: the vocabulary it was trained with (``encode(text) -> ids``).
    input_length, target_length: padded lengths (one compiled program).
    absolute: rank by |score| instead of score.
  """
  model: EncoderDecoderModel
  params: Any
  vocabulary: Any
  input_length: int = 128
  target_length: int = 16
  absolute: bool = False

  def scores(self, tokens: Sequence[str], *, question: str, answer: str) -> np.ndarray:
    """Each word's attribution (see :func:`word_attributions`)."""
    return word_attributions(self.model, self.params, self.vocabulary, question=question,
                             words=tokens, answer=answer, input_length=self.input_length,
                             target_length=self.target_length)

  def __call__(self, tokens: Sequence[str], *, question: str, answer: str, k: int) -> list[int]:
    """Indices of the k best-scoring words, in order."""
    scores = self.scores(tokens, question=question, answer=answer)
    if self.absolute:
      scores = np.where(np.isfinite(scores), np.abs(scores), -np.inf)
    order = sorted(range(len(tokens)), key=lambda i: (-scores[i], -i))
    return sorted(order[:k])


def make_attribution_selector(*, model: EncoderDecoderModel, vocabulary: Any,
                              params: Any | None = None,
                              checkpoint: str | os.PathLike | None = None,
                              input_length: int = 128, target_length: int = 16,
                              absolute: bool = False) -> AttributionSelector:
  """The attribution selector of a trained student.

  Give ``params`` or a ``checkpoint`` (a model dir or step dir, read with
  :func:`cdc_jax.student.checkpoints.restore_params`); ``vocabulary`` must be the one
  the student was trained with.
  """
  if (params is None) == (checkpoint is None):
    raise ValueError("give exactly one of params= or checkpoint=")
  if params is None:
    from cdc_jax.student import checkpoints

    params, _ = checkpoints.restore_params(checkpoint)
  return AttributionSelector(model, jax.tree.map(jnp.asarray, params), vocabulary,
                             input_length=input_length, target_length=target_length,
                             absolute=absolute)


_REGISTERED: dict[tuple[str, str], AttributionSelector] = {}


def register_attribution_selector(*, checkpoint: str | os.PathLike, model: EncoderDecoderModel,
                                  vocabulary: Any, name: str = "attribution",
                                  **options: Any) -> AttributionSelector:
  """Builds the selector of ``checkpoint`` and registers it as ``name`` (once per process).

  ``options`` go to :func:`make_attribution_selector`. Registering the same
  name and checkpoint again returns the first selector.
  """
  key = (name, os.path.abspath(checkpoint))
  if key not in _REGISTERED:
    selector = make_attribution_selector(model=model, vocabulary=vocabulary,
                                         checkpoint=checkpoint, **options)
    formats.register_key_token_selector(name, selector)
    _REGISTERED[key] = selector
  return _REGISTERED[key]


def register_tasks_with_attribution(*, checkpoint: str, model: EncoderDecoderModel,
                                    register_tasks: Callable[[], Any], name: str = "attribution",
                                    input_length: int = 128, target_length: int = 16) -> Any:
  """Registers tasks, then the attribution selector over the process vocabulary.

  The hook for training and evaluation (``gin/contribution/attribution.gin``
  binds it as their ``register_tasks``); returns what ``register_tasks`` returned.
  """
  from cdc_jax.tasks import catalog

  out = register_tasks()
  register_attribution_selector(checkpoint=checkpoint, model=model,
                                vocabulary=catalog.process_vocabulary(), name=name,
                                input_length=input_length, target_length=target_length)
  return out
