"""A seqio Vocabulary over a Llama-family checkpoint's own tokenizer (GGUF or HF dir).

Registering communities against it (``catalog.register_tasks(vocabulary=...)``)
makes their tasks the decoder-only student's, with no code: token ids are the
checkpoint's, EOS is the end of the assistant's turn where the checkpoint has
a chat template (``<|im_end|>`` for SmolLM2-Instruct), else its EOS token.
seqio pads with id 0 (SmolLM2's ``<|endoftext|>``): pads never carry a loss,
and the decoder reads a 0 first, as a document start.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import seqio
import tensorflow as tf

from cdc_jax.models import llama_chat
from cdc_jax.models import llama_tokenizer as tokenizer_lib


def load_tokenizer(weights: str | os.PathLike) -> tokenizer_lib.Tokenizer:
  """The tokenizer stored with ``weights``: a GGUF file or a HF model directory."""
  path = Path(weights)
  if path.is_dir():
    return tokenizer_lib.tokenizer_from_hf_dir(path)
  return tokenizer_lib.tokenizer_from_gguf(path)


class LlamaVocabulary(seqio.Vocabulary):
  """seqio's Vocabulary interface over ``llama_tokenizer.Tokenizer`` (no BOS added)."""

  def __init__(self, weights: str | os.PathLike, *, tokenizer: tokenizer_lib.Tokenizer | None = None):
    self.source = str(Path(weights).resolve())
    self.tokenizer = tokenizer or load_tokenizer(weights)
    fmt = None
    if self.tokenizer.chat_template:
      fmt = llama_chat.chat_format_from_template(self.tokenizer.chat_template)
    self._chat_format = fmt
    super().__init__(extra_ids=0)

  @property
  def chat_prompt_template(self) -> str | None:
    """A user turn around ``{inputs}``, ending where the assistant's answer begins."""
    if self._chat_format is None:
      return None
    return llama_chat.user_prompt("{inputs}", fmt=self._chat_format)

  @property
  def eos_id(self) -> int:
    return self.tokenizer.eos_id

  @property
  def unk_id(self) -> int | None:
    return None

  @property
  def _base_vocab_size(self) -> int:
    return self.tokenizer.vocab_size

  def _encode(self, s: str) -> Sequence[int]:
    return self.tokenizer.backend.encode(s, add_special_tokens=False).ids

  def _decode(self, ids: Sequence[int]) -> str:
    return self.tokenizer.decode([i for i in ids if i >= 0])

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    # The tokenizer is Rust behind Python: seqio's tf.data map calls it per example.
    def encode(text: bytes) -> np.ndarray:
      return np.asarray(self._encode(text.decode("utf-8")), np.int32)

    ids = tf.numpy_function(encode, [s], tf.int32, stateful=False)
    ids.set_shape([None])
    return ids

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    def decode(batch: np.ndarray) -> np.ndarray:
      rows = np.asarray(batch).reshape(-1, np.asarray(batch).shape[-1])
      out = [self._decode(r.tolist()).encode("utf-8") for r in rows]
      return np.asarray(out, object).reshape(np.asarray(batch).shape[:-1])

    text = tf.numpy_function(decode, [ids], tf.string, stateful=False)
    text.set_shape(ids.shape[:-1])
    return text

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, LlamaVocabulary) and other.source == self.source

  def __hash__(self) -> int:
    return hash(self.source)


@functools.lru_cache(maxsize=None)
def llama_vocabulary(weights: str) -> LlamaVocabulary:
  """The (cached) vocabulary of ``weights``: one object per file in a process."""
  return LlamaVocabulary(weights)


def eos_id(vocabulary: seqio.Vocabulary) -> int:
  """The vocabulary's EOS id (gin: the student stops decoding where its targets end)."""
  return vocabulary.eos_id
