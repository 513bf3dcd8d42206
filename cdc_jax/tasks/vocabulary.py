"""SentencePiece vocabularies: trained on community text, cached by content hash.

Ids follow T5: pad 0, eos 1, unk 2, no bos. A real T5 checkpoint brings its
own ``spiece.model`` (with 100 extra ids); pass its path instead.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Iterable

from cdc_jax import io as io_lib
from cdc_jax.data import records as records_lib

# Words every format adds to the communities' own text.
FORMAT_TEXT = ("The answer is", "So the answer is", "Explanation:", "predict:", "explain:",
               "Answer choices: (a) (b) (c) (d) (e)")


def community_texts(communities: Iterable[records_lib.Community]) -> list[str]:
  """Every question, choice, answer and rationale of ``communities``."""
  texts = list(FORMAT_TEXT)
  for community in communities:
    for split in sorted(community.records):
      for r in community.records[split]:
        texts.append(r.question)
        texts.extend(r.choices or ())
        texts.append(r.answer)
        texts.extend(r.rationales[level] for level in sorted(r.rationales))
  return texts


def train_vocabulary(texts: Iterable[str], *, vocab_size: int = 1000,
                     cache_dir: str | os.PathLike | None = None) -> Path:
  """Trains (or finds in the cache) a unigram SentencePiece model on ``texts``.

  The cache key is a hash of the texts and settings, so the same corpus
  always maps to the same file. Returns the ``.model`` path.
  """
  import sentencepiece as spm  # Heavy; only needed here.

  texts = [" ".join(t.split()) for t in texts if t and t.strip()]
  if not texts:
    raise ValueError("cannot train a vocabulary on no text")
  digest = hashlib.sha256()
  digest.update(f"unigram:{vocab_size}:byte_fallback:v1\n".encode())
  for t in texts:
    digest.update(t.encode() + b"\n")
  cache_dir = Path(cache_dir) if cache_dir is not None else io_lib.default_cache_dir() / "vocab"
  path = cache_dir / f"spm-{digest.hexdigest()[:16]}.model"
  if path.exists():
    return path
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
      model_type="unigram", character_coverage=1.0, byte_fallback=True,
      hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
      split_digits=True, minloglevel=2, num_threads=1)
  io_lib.atomic_write_bytes(path, model.getvalue())
  logging.info("trained a %d-piece vocabulary on %d texts: %s", vocab_size, len(texts), path)
  return path


def load_vocabulary(path: str | os.PathLike, *, extra_ids: int = 0):
  """A ``seqio.SentencePieceVocabulary`` for ``path`` (T5 checkpoints: extra_ids=100)."""
  import seqio

  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"SentencePiece model not found: {path}")
  return seqio.SentencePieceVocabulary(str(path), extra_ids=extra_ids)
