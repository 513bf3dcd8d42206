"""A tiny random-weight Llama teacher: ``--random_tiny`` smoke runs and tests.

What it generates is noise, but it goes through every step of the real path
(byte-level tokenizer with ChatML control tokens, chat template, batching,
stop tokens; with a mesh, sharded params) in seconds on a CPU, so the
launcher and server (``python -m cdc_jax.teacher.serve --random_tiny``) can be
run end to end without a checkpoint.
"""

from __future__ import annotations

from typing import Any


def tiny_tokenizer() -> Any:
  """A byte-level BPE tokenizer with ChatML control tokens, 264 ids (tests, smoke runs).

  The 256 byte symbols encode any text; 5 reserved special tokens pad the
  vocabulary to a multiple of 8 so the tiny model's vocabulary axis shards
  over a model axis of up to 8 devices.
  """
  from tokenizers import AddedToken, decoders, models, pre_tokenizers
  from tokenizers import Tokenizer as RustTokenizer

  from cdc_jax.models import llama_tokenizer as tokenizer_lib

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
  from cdc_jax.models import llama_sharding
  from cdc_jax.teacher import generation

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
    shardings = llama_sharding.param_shardings(abstract, mesh)
    params = jax.tree.map(llama_sharding.place, params, shardings)
  return generation.Generator(config, params, tok, batch_buckets=(4,),
                              prompt_buckets=(512, 2048), new_token_buckets=(64, 256), mesh=mesh)
