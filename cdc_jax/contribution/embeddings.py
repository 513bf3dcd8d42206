"""The teacher's word embeddings: what the prompt-privacy mechanism measures similarity in.

The mechanism replaces each word of a question by a word sampled from a fixed
**candidate vocabulary**. For the SmolLM2 teacher the candidates are the first
``num_candidates`` entries (by id) of its byte-level BPE vocabulary that are
a whole word with a leading-space marker: ``Ġ`` followed by two or more ASCII
letters, at least one of them a vowel (``Ġriver``, ``ĠParis``; not ``Ġth``).
BPE ids follow merge order, so the first ones are the most frequent words.
Some word-initial fragments (``Ġrab``) pass the filter; telling them from
words would need a dictionary.

Embeddings are rows of the GGUF ``token_embd`` tensor, **centred** (the mean
candidate row subtracted, which removes the direction every token shares and
spreads cosine similarities around 0) and L2-normalised. Any input word has an
embedding: a candidate its own row, another word the mean of its sub-word
pieces' rows (``" word"`` tokenized by the teacher), centred and normalised
the same way. The normalised candidate matrix is cached under
``$CDC_CACHE_DIR/privacy`` (keyed by the GGUF file and ``num_candidates``);
the full table and tokenizer load lazily, only for non-candidate words.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from cdc_jax import io as io_lib

WORD_TOKEN_MARKER = "Ġ"  # byte-level BPE's encoding of a leading space
_CANDIDATE = re.compile(r"Ġ([A-Za-z]{2,})\Z")
_VOWEL = re.compile(r"[aeiouyAEIOUY]")
DEFAULT_NUM_CANDIDATES = 8192
_CACHE_VERSION = "v1"


def is_candidate_token(token: str) -> bool:
  """Whether a teacher vocabulary entry is a candidate word (``Ġ`` + >= 2 letters with a vowel)."""
  match = _CANDIDATE.match(token)
  return bool(match and _VOWEL.search(match.group(1)))


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
  if np.any(norms == 0):
    raise ValueError("an embedding is zero after centring: cannot normalise it")
  return (matrix / norms).astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class WordEmbeddings:
  """Candidate output words with unit embeddings, and an embedder for any input word.

  Attributes:
    words: the candidate vocabulary (surface forms, no space marker).
    matrix: (len(words), d) float32, centred and L2-normalised rows.
    source: where the vectors came from (recorded in provenance).
    embed_other: unit embedding of a word outside ``words``; returns None
      when the word has none (it then passes through unperturbed).
  """
  words: tuple[str, ...]
  matrix: np.ndarray
  source: str
  embed_other: Callable[[str], np.ndarray | None] = lambda word: None

  def __post_init__(self):
    if self.matrix.ndim != 2 or self.matrix.shape[0] != len(self.words):
      raise ValueError(f"matrix shape {self.matrix.shape} does not match {len(self.words)} words")
    if len(set(self.words)) != len(self.words):
      raise ValueError("candidate words must be distinct")
    object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})

  def __len__(self) -> int:
    return len(self.words)

  def index(self, word: str) -> int | None:
    """Row of ``word`` among the candidates, or None."""
    return self._index.get(word)  # type: ignore[attr-defined]

  def embed(self, word: str) -> np.ndarray | None:
    """The unit embedding of ``word`` (None: no embedding, passes through)."""
    row = self.index(word)
    return self.matrix[row] if row is not None else self.embed_other(word)

  def similarities(self, word: str) -> np.ndarray | None:
    """Cosine similarity of ``word`` to every candidate, shape (len(words),)."""
    vector = self.embed(word)
    return None if vector is None else self.matrix @ vector


def from_vectors(words: Sequence[str], vectors: np.ndarray, *, source: str = "vectors",
                 extra: Mapping[str, np.ndarray] | None = None,
                 center: bool = True) -> WordEmbeddings:
  """WordEmbeddings over given vectors (tests, other embedding tables).

  ``extra`` maps input-only words to raw vectors, centred and normalised
  like the candidates; other words have no embedding.
  """
  vectors = np.asarray(vectors, np.float32)
  mean = vectors.mean(axis=0) if center else np.zeros(vectors.shape[1], np.float32)
  extra_unit = {w: _unit_rows((np.asarray(v, np.float32) - mean)[None])[0]
                for w, v in (extra or {}).items()}
  return WordEmbeddings(tuple(words), _unit_rows(vectors - mean), source, extra_unit.get)


# ---------------------------------------------------------------------------
# The SmolLM2 teacher's embeddings.


def _token_embd(reader) -> np.ndarray:
  from gguf import quants  # Deferred: only the teacher backend needs gguf.

  for tensor in reader.tensors:
    if tensor.name == "token_embd.weight":
      return np.asarray(quants.dequantize(tensor.data, tensor.tensor_type), np.float32)
  raise ValueError("GGUF file has no token_embd.weight tensor")


def _cache_path(gguf_path: Path, num_candidates: int, cache_dir: Path) -> Path:
  stat = gguf_path.stat()
  key = f"{_CACHE_VERSION}:{gguf_path.name}:{stat.st_size}:{stat.st_mtime_ns}:{num_candidates}"
  return cache_dir / f"candidates-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def _build_candidates(gguf_path: Path, num_candidates: int):
  from cdc_jax.models import llama_weights

  reader = llama_weights.open_gguf(gguf_path)
  tokens = list(llama_weights.gguf_field(reader, "tokenizer.ggml.tokens"))
  ids = [i for i, t in enumerate(tokens) if is_candidate_token(t)][:num_candidates]
  if len(ids) < num_candidates:
    logging.warning("%s has only %d candidate word tokens (asked for %d)", gguf_path, len(ids),
                    num_candidates)
  table = _token_embd(reader)
  mean = table[ids].mean(axis=0)
  words = np.array([tokens[i][len(WORD_TOKEN_MARKER):] for i in ids])
  return np.array(ids, np.int64), words, _unit_rows(table[ids] - mean), mean.astype(np.float32)


class _TeacherWords:
  """Embeds words outside the candidates from the full table (loaded on first use)."""

  def __init__(self, gguf_path: Path, mean: np.ndarray):
    self.gguf_path, self.mean = gguf_path, mean
    self._table = self._tokenizer = None

  def __call__(self, word: str) -> np.ndarray | None:
    if self._table is None:
      from cdc_jax.models import llama_tokenizer, llama_weights

      reader = llama_weights.open_gguf(self.gguf_path)
      self._table = _token_embd(reader)
      self._tokenizer = llama_tokenizer.tokenizer_from_gguf(reader)
    tok = self._tokenizer
    ids = tok.encode(" " + word)
    if tok.add_bos and ids and ids[0] == tok.bos_id:
      ids = ids[1:]
    if not ids:
      return None
    return _unit_rows((self._table[ids].mean(axis=0) - self.mean)[None])[0]


_LOADED: dict[tuple[str, int], WordEmbeddings] = {}


def teacher_word_embeddings(gguf_path: str | os.PathLike | None = None, *,
                            num_candidates: int = DEFAULT_NUM_CANDIDATES,
                            cache_dir: str | os.PathLike | None = None) -> WordEmbeddings:
  """The teacher's word embeddings (default: the SmolLM2-135M-Instruct GGUF), cached.

  Loaded once per process and ``num_candidates``; the candidate matrix is
  also cached on disk (about 19 MB for 8192 candidates).
  """
  if gguf_path is None:
    from cdc_jax.models import llama_weights

    gguf_path = llama_weights.smollm2_gguf_path()
  gguf_path = Path(gguf_path).resolve()
  key = (str(gguf_path), num_candidates)
  if key in _LOADED:
    return _LOADED[key]
  if num_candidates < 2:
    raise ValueError(f"num_candidates must be >= 2, got {num_candidates}")
  cache_dir = Path(cache_dir) if cache_dir else io_lib.default_cache_dir() / "privacy"
  path = _cache_path(gguf_path, num_candidates, cache_dir)
  if path.exists():
    with np.load(path, allow_pickle=False) as data:
      ids, words, matrix, mean = data["ids"], data["words"], data["matrix"], data["mean"]
  else:
    ids, words, matrix, mean = _build_candidates(gguf_path, num_candidates)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, ids=ids, words=words, matrix=matrix, mean=mean)
    os.replace(tmp, path)
    logging.info("cached %d candidate word embeddings of %s in %s", len(ids), gguf_path.name, path)
  source = f"{gguf_path.name}:token_embd:first{len(ids)}words:centred"
  embeddings = WordEmbeddings(tuple(str(w) for w in words), matrix, source,
                              _TeacherWords(gguf_path, mean))
  _LOADED[key] = embeddings
  return embeddings
