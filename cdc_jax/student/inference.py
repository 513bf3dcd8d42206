"""Predictions for a file of inputs with a trained student (``python -m cdc_jax.infer``).

Inputs (``input_format``; 'auto' picks by content):

* ``text``: one input per line;
* ``jsonl``: JSON Lines objects with an ``"inputs"`` string (an ``"id"`` is
  passed through);
* ``records``: a community's trace records (one ``TraceRecord`` a line, e.g. a
  split file of a community directory), rendered as the tasks of format
  ``fmt`` render their inputs (question and lettered choices; the
  ``predict:``/``explain:`` prefix for step_by_step).

Inputs are tokenized like the tasks' (the process vocabulary or a given
SentencePiece model, cut to ``inputs`` length - 1 plus EOS; cut inputs are
counted), decoded greedily or with beam search, and written atomically as
JSON Lines ``{"input", "prediction"}`` (plus ``"id"`` when the input has one),
in input order. A bad line raises an error naming the file and line before
any model is loaded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from cdc_jax import io as io_lib
from cdc_jax import names, progress
from cdc_jax.data import records as records_lib
from cdc_jax.student import prediction
from cdc_jax.tasks import formats

INPUT_FORMATS = ("auto", "text", "jsonl", "records")


class InputFileError(ValueError):
  """A line of an input file that cannot be used."""

  def __init__(self, path: str | os.PathLike, line: int | None, message: str):
    self.path, self.line = str(path), line
    super().__init__(f"{path}{'' if line is None else f':{line}'}: {message}")


@dataclasses.dataclass(frozen=True)
class InferInput:
  """One input to decode: its text, the line it came from and an optional id."""
  text: str
  line: int
  id: str | None = None


@dataclasses.dataclass(frozen=True)
class InferReport:
  """What :func:`infer` did: counts, files and the checkpoint's step."""
  input_file: str
  output_file: str
  input_format: str
  num_read: int
  num_written: int
  num_truncated: int
  step: int | None


# --- Reading ------------------------------------------------------------------


def _lines(path: Path) -> list[tuple[int, str]]:
  """(line number, text without line ending) of every line; UTF-8 checked per line."""
  try:
    raw = path.read_bytes()
  except FileNotFoundError:
    raise InputFileError(path, None, "file not found") from None
  out = []
  for number, line in enumerate(raw.splitlines(), start=1):
    try:
      out.append((number, line.decode("utf-8")))
    except UnicodeDecodeError as e:
      raise InputFileError(path, number, f"not UTF-8 ({e.reason} at byte {e.start})") from None
  return out


def detect_format(path: str | os.PathLike) -> str:
  """'jsonl' or 'records' for a file whose first line is a JSON object with
  ``inputs`` or ``question``; 'text' otherwise (a ``.jsonl`` file must be one)."""
  path = Path(path)
  try:
    with path.open("rb") as f:
      first = f.readline()
  except FileNotFoundError:
    raise InputFileError(path, None, "file not found") from None
  try:
    obj = json.loads(first)
  except (json.JSONDecodeError, UnicodeDecodeError):
    obj = None
  if isinstance(obj, dict) and "inputs" in obj:
    return "jsonl"
  if isinstance(obj, dict) and "question" in obj:
    return "records"
  if path.suffix in (".jsonl", ".json"):
    raise InputFileError(path, 1, "expected a JSON object with an 'inputs' string (JSON Lines "
                         "inputs) or a trace record with a 'question'")
  return "text"


def _text_inputs(path: Path) -> list[InferInput]:
  out = []
  for number, line in _lines(path):
    if not line.strip():
      raise InputFileError(path, number, "empty line (one input a line, no blank lines)")
    out.append(InferInput(line, number))
  return out


def _jsonl_inputs(path: Path) -> list[InferInput]:
  out = []
  for number, line in _lines(path):
    if not line.strip():
      raise InputFileError(path, number, "empty line (one JSON object a line, no blank lines)")
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      raise InputFileError(path, number, f"invalid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(obj, dict):
      raise InputFileError(path, number, f"expected a JSON object, got {type(obj).__name__}")
    text = obj.get("inputs")
    if not isinstance(text, str) or not text.strip():
      raise InputFileError(path, number, f"field 'inputs': expected a non-empty string, got "
                           f"{text!r}")
    example_id = obj.get("id")
    if example_id is not None and not isinstance(example_id, (str, int)):
      raise InputFileError(path, number, f"field 'id': expected a string or integer, got "
                           f"{example_id!r}")
    out.append(InferInput(text, number, None if example_id is None else str(example_id)))
  return out


def _record_inputs(path: Path, fmt: str, part: str | None) -> list[InferInput]:
  names.validate_format(fmt)
  if (fmt == "step_by_step") != (part is not None):
    raise ValueError(f"format {fmt!r} with part {part!r}: only step_by_step has parts "
                     f"{names.STEP_BY_STEP_PARTS}, and it needs one")
  if part is not None and part not in names.STEP_BY_STEP_PARTS:
    raise ValueError(f"unknown step_by_step part {part!r}: expected one of "
                     f"{names.STEP_BY_STEP_PARTS}")
  return [InferInput(formats.render_inputs(r.question, r.choices, prefix=part), number, r.id)
          for number, r in records_lib.iter_records(path)]


def read_inputs(path: str | os.PathLike, *, input_format: str = "auto", fmt: str = "cot_label",
                part: str | None = None) -> tuple[str, list[InferInput]]:
  """Reads every input of ``path``; returns ``(format used, inputs)``.

  Raises :class:`InputFileError` (or ``RecordError`` for records) naming the
  file and line of the first bad line.
  """
  if input_format not in INPUT_FORMATS:
    raise ValueError(f"unknown input_format {input_format!r}: expected one of {INPUT_FORMATS}")
  path = Path(path)
  if input_format == "auto":
    input_format = detect_format(path)
  if input_format == "text":
    return input_format, _text_inputs(path)
  if input_format == "jsonl":
    return input_format, _jsonl_inputs(path)
  return input_format, _record_inputs(path, fmt, part)


# --- Decoding -------------------------------------------------------------------


def encode_inputs(vocabulary: Any, texts: Sequence[str], length: int, *,
                  eos: bool = True) -> tuple[list[list[int]], int]:
  """Token ids as the tasks make them (cut to ``length - 1``, then EOS; without ``eos``, cut to
  ``length``) and how many were cut."""
  rows, truncated = [], 0
  room = length - 1 if eos else length
  for text in texts:
    ids = list(vocabulary.encode(text))
    if len(ids) > room:
      truncated += 1
      ids = ids[:room]
    rows.append(ids + [vocabulary.eos_id] if eos else ids)
  return rows, truncated


def _prompt_options(vocab: Any, spm_model: str | None) -> tuple[str, bool]:
  """(prompt template, EOS after the inputs) of the tasks the model was trained on."""
  from cdc_jax.tasks import catalog, registry

  options = catalog.process_options() if spm_model is None else None
  if options is None:
    return "{inputs}", True
  return registry.prompt_template(options, vocab), options.inputs_eos


def _vocabulary(model: Any, spm_model: str | None, extra_ids: int,
                register_tasks: Callable[[], Any] | None) -> Any:
  from cdc_jax.tasks import catalog, vocabulary as vocab_lib

  if spm_model is not None:
    vocab = vocab_lib.load_vocabulary(spm_model, extra_ids=extra_ids)
  else:
    if register_tasks is not None:
      register_tasks()
    vocab = catalog.process_vocabulary()
    if vocab is None:
      raise ValueError("no vocabulary: pass spm_model, or register_tasks to register the "
                       "communities the model was trained on")
  if vocab.vocab_size > model.config.vocab_size:
    raise ValueError(f"the vocabulary has {vocab.vocab_size} ids but the model's embedding only "
                     f"{model.config.vocab_size} rows (a different vocabulary or model config?)")
  return vocab


def infer(*, model: Any, checkpoint: str, input_file: str, output_file: str,
          task_feature_lengths: Mapping[str, int], batch_size: int, num_beams: int,
          input_format: str, fmt: str, part: str | None, spm_model: str | None,
          extra_ids: int, mesh_shape: Sequence[int],
          register_tasks: Callable[[], Any] | None) -> InferReport:
  """Decodes every input of ``input_file`` and writes ``output_file`` (JSON Lines).

  Every setting is required: the values live in ``gin/runs/infer.gin``.

  Args:
    model: the model wrapper, with the config the checkpoint was trained with.
    checkpoint: a cdc model dir or checkpoint step dir, or a HF T5 directory.
    input_file: text, JSON Lines or trace records; see the module docstring.
    output_file: written atomically, one ``{"input", "prediction"}`` a line.
    task_feature_lengths: {"inputs": encoder length, "targets": decoded tokens}.
    batch_size: rows per decoding batch (the last one is padded).
    num_beams: 1 for greedy decoding, else beam search.
    input_format: 'auto', 'text', 'jsonl' or 'records'.
    fmt, part: records only: the task format whose inputs to render
      (``part`` 'predict'/'explain' for step_by_step).
    spm_model: a SentencePiece model to tokenize with (e.g. a T5 checkpoint's
      ``spiece.model``; ``extra_ids`` as in training). None: the process
      vocabulary after ``register_tasks()``, which must register the
      communities the model was trained on, in the same order.
    extra_ids: sentinel ids added to ``spm_model`` (as in training).
    mesh_shape: (data, model) mesh for decoding.
    register_tasks: called when no ``spm_model`` is given (gin: @catalog.register_tasks).
  """
  lengths = dict(task_feature_lengths)
  used_format, inputs = read_inputs(input_file, input_format=input_format, fmt=fmt, part=part)
  print(f"infer: read {len(inputs)} inputs ({used_format}) from {input_file}", flush=True)
  vocab = _vocabulary(model, spm_model, extra_ids, register_tasks)
  # As the tasks render them: a decoder-only student's prompt in its chat template, no EOS.
  template, eos = _prompt_options(vocab, spm_model)
  tokens, truncated = encode_inputs(vocab, [template.replace("{inputs}", x.text) for x in inputs],
                                    lengths["inputs"], eos=eos)
  if truncated:
    logging.warning("%d of %d inputs are longer than %d tokens and were cut", truncated,
                    len(inputs), lengths["inputs"])
  predictor, step = prediction.restore_predictor(
      model, checkpoint, mesh_shape=mesh_shape, batch_size=batch_size,
      task_feature_lengths=lengths, num_beams=num_beams)
  bar = progress.Progress(len(inputs), label="infer", unit="examples", interval=10.0)
  rows = []
  for start in range(0, len(inputs), batch_size):
    chunk = inputs[start:start + batch_size]
    decoded = predictor.predict(model.prompt_features(tokens[start:start + batch_size],
                                                      lengths["inputs"]))
    for item, row in zip(chunk, decoded):
      out = {"input": item.text, "prediction": vocab.decode(row.tolist())}
      if item.id is not None:
        out = {"id": item.id, **out}
      rows.append(out)
    bar.update(len(chunk))
  io_lib.atomic_write_text(output_file, "".join(
      json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
  report = InferReport(input_file=str(input_file), output_file=str(output_file),
                       input_format=used_format, num_read=len(inputs), num_written=len(rows),
                       num_truncated=truncated, step=step)
  print(f"infer: wrote {report.num_written} predictions to {output_file} (checkpoint step "
        f"{step}; {truncated} inputs cut to {lengths['inputs']} tokens)", flush=True)
  return report

