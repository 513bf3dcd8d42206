"""Evaluates a student checkpoint on every scored task of a task or mixture.

For each task: decode (greedy, or beam search), parse the answer
(``postprocess_fn``) and compute the task's metrics with seqio's Evaluator;
writes ``<task>.predictions.jsonl`` (input, target, prediction, parsed and
gold answer, correct) and ``<task>.metrics.json``, plus ``metrics.json`` for all.
The command line is ``python -m cdc_jax.evaluate``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import seqio

from cdc_jax import arguments, progress
from cdc_jax import io as io_lib
from cdc_jax.student import prediction
from cdc_jax.tasks import lengths as lengths_lib
from cdc_jax.tasks import metrics as metrics_lib


def _predict_fn(predictor: prediction.Predictor, lengths: Mapping[str, int], label: str):
  def predict(ds) -> list[tuple[int, list[int]]]:
    items = list(ds.as_numpy_iterator())
    bar = progress.Progress(len(items), label=f"decode {label}", unit="examples", interval=10.0)
    out = []
    for chunk in prediction.batched(items, predictor.batch_size):
      features = {k: prediction.pad_rows((ex[k] for _, ex in chunk), lengths[k])
                  for k in predictor.model.PREDICT_FEATURES}
      decoded = predictor.predict(features)
      out.extend((int(index), row.tolist()) for (index, _), row in zip(chunk, decoded))
      bar.update(len(chunk))
    return out
  return predict


def _prediction_rows(task: seqio.Task, examples: Sequence[Mapping[str, Any]],
                     tokens: Sequence[Sequence[int]]) -> list[dict[str, Any]]:
  vocab = task.output_features["targets"].vocabulary
  rows = []
  for ex, toks in zip(examples, tokens):
    text = vocab.decode(list(toks))
    parsed = task.postprocess_fn(text, example=ex, is_target=False)
    gold = task.postprocess_fn(ex["targets_pretokenized"], example=ex, is_target=True)
    rows.append({"id": metrics_lib._text(ex.get("id", b"")),  # pylint: disable=protected-access
                 "input": metrics_lib._text(ex["inputs_pretokenized"]),  # pylint: disable=protected-access
                 "target": metrics_lib._text(ex["targets_pretokenized"]),  # pylint: disable=protected-access
                 "prediction": text, "parsed_answer": parsed, "gold_answer": gold,
                 "correct": metrics_lib.answer_accuracy([gold], [parsed])["accuracy"] == 100.0})
  return rows


def evaluate(*, model: Any, mixture_or_task_name: str | Sequence[str],
             checkpoint: str, task_feature_lengths: Mapping[str, int | str], output_dir: str,
             batch_size: int, split: str, num_beams: int, mesh_shape: Sequence[int],
             register_tasks: Callable[[], Any] | None) -> dict[str, dict[str, float]]:
  """Evaluates ``checkpoint`` on the scored tasks of one or more tasks/mixtures.

  Every setting is required: the values live in ``gin/runs/eval.gin``.

  Args:
    model: the model wrapper, with the config the checkpoint was trained with.
    mixture_or_task_name: one registered task or mixture, or several.
    checkpoint: a cdc model dir or checkpoint step dir, or weights the model
      reads itself (a HF T5 dir; a GGUF file or HF Llama dir).
    task_feature_lengths: {"inputs": ..., "targets": ...}: tokens, or a
      percentile of the evaluated split ('p95').
    output_dir: predictions and metrics files.
    batch_size: rows per decoding batch (the last one is padded).
    split: the split to evaluate.
    num_beams: 1 for greedy decoding, else beam search.
    mesh_shape: (data, model) mesh for decoding.
    register_tasks: called first, to register tasks (gin: @catalog.register_tasks; None:
      the caller registered them).

  Returns {task name: metrics} (metrics include 'accuracy' in percent and
  'num_examples'); parameters are loaded and decoding compiled once.
  """
  arguments.require_positive_int(batch_size=batch_size, num_beams=num_beams)
  arguments.require_feature_lengths(task_feature_lengths)
  if register_tasks is not None:
    register_tasks()
  names = [mixture_or_task_name] if isinstance(mixture_or_task_name, str) else list(
      mixture_or_task_name)
  # Percentile lengths ('p95') become numbers; examples the lengths cut are counted and warned of.
  lengths = lengths_lib.audit_feature_lengths(names, task_feature_lengths, split=split,
                                              out_dir=output_dir, scored_only=True)
  predictor, step = prediction.restore_predictor(
      model, checkpoint, mesh_shape=mesh_shape, batch_size=batch_size,
      task_feature_lengths=lengths, num_beams=num_beams)
  outputs = Path(output_dir)
  outputs.mkdir(parents=True, exist_ok=True)
  results: dict[str, dict[str, float]] = {}
  for name in names:
    results.update(_evaluate_one(name, predictor, lengths, split, step, outputs))
  io_lib.atomic_write_text(outputs / "metrics.json", json.dumps(
      {"checkpoint": str(checkpoint), "step": step, "split": split, "tasks": results},
      indent=2, sort_keys=True) + "\n")
  return results


def _evaluate_one(name: str, predictor: prediction.Predictor, lengths: Mapping[str, int],
                  split: str, step: int | None, outputs: Path) -> dict[str, dict[str, float]]:
  converter = predictor.model.FEATURE_CONVERTER_CLS(pack=False)
  evaluator = seqio.Evaluator(
      name, feature_converter=converter, eval_split=split,
      sequence_length=dict(lengths), use_memory_cache=False, async_compute_metrics=False)
  if not evaluator.eval_tasks:
    raise ValueError(f"{name!r} has no scored task with a {split!r} split")
  all_metrics, all_outputs = evaluator.evaluate(
      compute_metrics=True, step=step,
      predict_fn=_predict_fn(predictor, converter.get_model_feature_lengths(dict(lengths)), name))
  all_metrics = all_metrics.result() if hasattr(all_metrics, "result") else all_metrics
  results = {}
  for task in evaluator.eval_tasks:
    examples = list(evaluator.cached_task_datasets[task.name].as_numpy_iterator())
    tokens = all_outputs[task.name][seqio.metrics.ModelOutputType.PREDICTION]
    rows = _prediction_rows(task, examples, tokens)
    scores = {k: float(getattr(v, "compute", lambda v=v: v)()) if not isinstance(v, float) else v
              for k, v in all_metrics[task.name].items()}
    scores["num_examples"] = float(len(rows))
    io_lib.atomic_write_text(outputs / f"{task.name}.predictions.jsonl", "".join(
        json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    io_lib.atomic_write_text(outputs / f"{task.name}.metrics.json",
                                  json.dumps(scores, indent=2, sort_keys=True) + "\n")
    results[task.name] = scores
    print(f"{task.name}: accuracy {scores['accuracy']:.1f}% on {len(rows)} examples "
          f"(answered {scores['answered']:.1f}%)", flush=True)
  return results

