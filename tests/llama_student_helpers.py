"""A tiny Hugging Face Llama directory (random weights, a small BPE tokenizer, ChatML).

The decoder-only student's tests build one in a temporary directory: no download,
and the same files load into transformers (the reference) and into cdc_jax.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 0, 1, 2 as in SmolLM2.
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\\nYou are a tiny test model.<|im_end|>\\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def make_tiny_hf_llama(directory: Path, texts: Iterable[str], *, vocab_size: int = 384,
                       hidden: int = 32, layers: int = 2, seed: int = 0, tie: bool = True) -> Path:
  """Writes config.json, model.safetensors, tokenizer.json and tokenizer_config.json."""
  import torch
  import transformers
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

  directory.mkdir(parents=True, exist_ok=True)
  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tokenizer.train_from_iterator(list(texts) + [CHATML, "You are a tiny test model."],
                                trainer=trainer)
  tokenizer.save(str(directory / "tokenizer.json"))
  (directory / "tokenizer_config.json").write_text(json.dumps({
      "eos_token": "<|im_end|>", "bos_token": "<|im_start|>", "pad_token": "<|im_end|>",
      "add_bos_token": False, "chat_template": CHATML}))
  torch.manual_seed(seed)
  config = transformers.LlamaConfig(
      vocab_size=tokenizer.get_vocab_size(), hidden_size=hidden, intermediate_size=2 * hidden,
      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
      head_dim=hidden // 4, max_position_embeddings=512, rms_norm_eps=1e-5,
      tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2, pad_token_id=2)
  model = transformers.LlamaForCausalLM(config)
  with torch.no_grad():  # Larger than the 0.02 init: logits that differ clearly by token.
    for p in model.parameters():
      p.mul_(5.0) if p.ndim > 1 else p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(directory)
  return directory
