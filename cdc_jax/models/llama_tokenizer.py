"""Byte-level BPE tokenizer for the teacher, built from a GGUF file or a HF dir.

Uses the ``tokenizers`` package (Rust BPE). From GGUF we rebuild the vocab,
merges and control tokens, and pick the pre-tokenizer that llama.cpp uses for
the file's ``tokenizer.ggml.pre`` (SmolLM2's ``smollm`` splits every digit,
which matters for arithmetic prompts).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

# The GPT-2 split plus per-digit splitting (starcoder family, SmolLM).
_DIGIT_SPLIT_PRES = frozenset({"smollm", "starcoder", "refact", "codeshell", "command-r"})
_GPT2_PRES = frozenset({"gpt2", "default"})
_LLAMA3_PRES = frozenset({"llama-bpe", "llama3"})
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Control tokens that end a turn in the chat formats we know.
_TURN_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>")
_GGUF_CONTROL = 3


@dataclasses.dataclass(frozen=True)
class Tokenizer:
  """Text <-> token ids, with the special ids and chat template of the model.

  ``stop_ids`` are the ids that end a generation: ``eos_id`` plus the
  turn-ending control tokens present in the vocabulary.
  """
  backend: Any  # tokenizers.Tokenizer
  bos_id: int | None
  eos_id: int
  pad_id: int
  add_bos: bool
  chat_template: str | None
  stop_ids: tuple[int, ...]

  @property
  def vocab_size(self) -> int:
    """Number of token ids, special tokens included."""
    return self.backend.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str) -> list[int]:
    """Token ids of ``text`` (special-token strings such as ``<|im_start|>`` map to their id)."""
    ids = self.backend.encode(text, add_special_tokens=False).ids
    return [self.bos_id, *ids] if self.add_bos and self.bos_id is not None else ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """``encode`` over many texts (parallel in the Rust backend)."""
    encodings = self.backend.encode_batch(list(texts), add_special_tokens=False)
    prefix = [self.bos_id] if self.add_bos and self.bos_id is not None else []
    return [prefix + e.ids for e in encodings]

  def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
    """Text of ``ids``."""
    return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def decode_batch(self, batch: Sequence[Sequence[int]], *, skip_special_tokens: bool = True) -> list[str]:
    """``decode`` over many sequences."""
    return self.backend.decode_batch([[int(i) for i in ids] for ids in batch],
                                     skip_special_tokens=skip_special_tokens)


def _stop_ids(backend: Any, eos_id: int) -> tuple[int, ...]:
  ids = [eos_id]
  for token in _TURN_END_TOKENS:
    tid = backend.token_to_id(token)
    if tid is not None and tid not in ids:
      ids.append(tid)
  return tuple(ids)


def _pre_tokenizer(pre: str, source: str) -> Any:
  from tokenizers import Regex, pre_tokenizers
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  if pre in _DIGIT_SPLIT_PRES:
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
  if pre in _GPT2_PRES:
    return byte_level
  if pre in _LLAMA3_PRES:
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  raise ValueError(f"{source}: tokenizer.ggml.pre={pre!r} is not supported; known: "
                   f"{sorted(_DIGIT_SPLIT_PRES | _GPT2_PRES | _LLAMA3_PRES)}")


def tokenizer_from_gguf(path_or_reader: str | os.PathLike[str] | Any) -> Tokenizer:
  """The byte-level BPE tokenizer stored in a GGUF file (``tokenizer.ggml.model == 'gpt2'``)."""
  from tokenizers import AddedToken, decoders, models, processors
  from tokenizers import Tokenizer as Backend

  from cdc_jax.models import llama_weights
  if isinstance(path_or_reader, (str, os.PathLike)):
    source, reader = str(path_or_reader), llama_weights.open_gguf(path_or_reader)
  else:
    source, reader = "GGUF", path_or_reader
  field = lambda key, default=...: llama_weights.gguf_field(reader, key, default)
  kind = field("tokenizer.ggml.model")
  if kind != "gpt2":
    raise ValueError(f"{source}: tokenizer.ggml.model={kind!r}; only byte-level BPE ('gpt2') "
                     "is supported")
  tokens = list(field("tokenizer.ggml.tokens"))
  types = list(field("tokenizer.ggml.token_type", [1] * len(tokens)))
  merges = [tuple(m.split(" ", 1)) for m in field("tokenizer.ggml.merges")]
  bad = [i for i, m in enumerate(merges) if len(m) != 2]
  if bad:
    raise ValueError(f"{source}: tokenizer.ggml.merges[{bad[0]}] is not 'a b'")
  vocab = {token: i for i, token in enumerate(tokens)}
  if len(vocab) != len(tokens):
    raise ValueError(f"{source}: tokenizer.ggml.tokens has {len(tokens) - len(vocab)} duplicates")
  backend = Backend(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
  backend.pre_tokenizer = _pre_tokenizer(field("tokenizer.ggml.pre", "default"), source)
  backend.decoder = decoders.ByteLevel()
  backend.post_processor = processors.ByteLevel(trim_offsets=False)
  backend.add_special_tokens([
      AddedToken(tokens[i], special=True, normalized=False)
      for i in range(len(tokens)) if types[i] == _GGUF_CONTROL])
  eos_id = int(field("tokenizer.ggml.eos_token_id"))
  bos_id = field("tokenizer.ggml.bos_token_id", None)
  return Tokenizer(
      backend=backend,
      bos_id=None if bos_id is None else int(bos_id),
      eos_id=eos_id,
      pad_id=int(field("tokenizer.ggml.padding_token_id", eos_id)),
      add_bos=bool(field("tokenizer.ggml.add_bos_token", False)),
      chat_template=field("tokenizer.chat_template", None),
      stop_ids=_stop_ids(backend, eos_id))


def tokenizer_from_hf_dir(directory: str | os.PathLike[str]) -> Tokenizer:
  """The tokenizer of a HF model dir (``tokenizer.json`` + ``tokenizer_config.json``)."""
  from tokenizers import Tokenizer as Backend
  directory = pathlib.Path(directory)
  path = directory / "tokenizer.json"
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found")
  backend = Backend.from_file(str(path))
  # tokenizer.json's own post-processor may add BOS; we add it ourselves (add_bos).
  tok_config = _read_json(directory / "tokenizer_config.json")
  model_config = _read_json(directory / "config.json")

  def special_id(name: str) -> int | None:
    token = tok_config.get(f"{name}_token")
    if isinstance(token, dict):
      token = token.get("content")
    if isinstance(token, str) and backend.token_to_id(token) is not None:
      return backend.token_to_id(token)
    value = model_config.get(f"{name}_token_id")
    if isinstance(value, list):
      value = value[0] if value else None
    return None if value is None else int(value)

  eos_id = special_id("eos")
  if eos_id is None:
    raise ValueError(f"{directory}: no eos token in tokenizer_config.json or config.json")
  bos_id = special_id("bos")
  pad_id = special_id("pad")
  template = tok_config.get("chat_template")
  if template is None and (directory / "chat_template.jinja").is_file():
    template = (directory / "chat_template.jinja").read_text()
  return Tokenizer(
      backend=backend,
      bos_id=bos_id,
      eos_id=eos_id,
      pad_id=eos_id if pad_id is None else pad_id,
      add_bos=bool(tok_config.get("add_bos_token", bos_id is not None)),
      chat_template=template if isinstance(template, str) else None,
      stop_ids=_stop_ids(backend, eos_id))


def _read_json(path: pathlib.Path) -> dict[str, Any]:
  if not path.is_file():
    return {}
  try:
    value = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: invalid JSON: {e}") from e
  if not isinstance(value, dict):
    raise ValueError(f"{path}: expected a JSON object")
  return value
