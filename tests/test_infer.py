"""Inference on a file of inputs: rows, order, equality with Predictor, the CLI, bad lines."""

import json

import gin
import pytest

from cdc_jax import infer
from cdc_jax.models import partitioning
from cdc_jax.student import inference, prediction, training
from cdc_jax.data import records as records_lib
from cdc_jax.models.encoder_decoder import build_model
from cdc_jax.models.t5_config import t5_config
from cdc_jax.tasks import catalog, formats
from tests import train_helpers

LENGTHS = {"inputs": 16, "targets": 8}
BATCH = 2
LONG = "Is " + " ".join(str(i) for i in range(40)) + " a number?"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny model trained on a community whose answer is always 'yes', and a Predictor."""
  root = tmp_path_factory.mktemp("infer")
  manifest = train_helpers.always_yes_community(root / "data")
  catalog.register_tasks(embedded=False, communities=[manifest])
  model = build_model(t5_config("tiny", vocab_size=1024, dropout_rate=0.0))
  training.train(model=model, mixture_or_task_name="cdc.yesland.L6.label_only",
                 task_feature_lengths=LENGTHS, batch_size=8, train_steps=25,
                 model_dir=str(root / "run"), tensorboard=False,
                 **train_helpers.train_settings(adamw=True, pack=False, log_every=25,
                                                checkpoint_every=25))
  mesh = partitioning.make_mesh((-1, 1))
  shapes = {"encoder_input_tokens": (BATCH, LENGTHS["inputs"]),
            "decoder_input_tokens": (BATCH, LENGTHS["targets"])}
  params, _ = prediction.load_params(model, str(root / "run"), mesh, input_shapes=shapes)
  predictor = prediction.Predictor(model, params, mesh, batch_size=BATCH,
                                 max_decode_len=LENGTHS["targets"])
  return {"root": root, "manifest": manifest, "model": model, "checkpoint": str(root / "run"),
          "predictor": predictor, "vocab": catalog.process_vocabulary()}


def _direct(trained, texts):
  """Predictions of Predictor itself for ``texts``, tokenized as the tasks do."""
  vocab = trained["vocab"]
  rows = [list(vocab.encode(t))[:LENGTHS["inputs"] - 1] + [1] for t in texts]
  decoded = trained["predictor"].predict(
      {"encoder_input_tokens": prediction.pad_rows(rows, LENGTHS["inputs"])})
  return [vocab.decode(r.tolist()) for r in decoded]


def _rows(path):
  return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_cli_on_a_text_file_matches_the_predictor(trained, tmp_path, capsys):
  texts = ["Is 7 a number?", "Is 300 a number?", LONG]
  (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
  out = tmp_path / "out.jsonl"
  gin.clear_config()
  try:
    infer.main(["--gin_file=gin/models/t5_1_1_tiny.gin", "--gin_file=gin/runs/infer.gin",
                "--gin.VOCAB_SIZE=1024", "--gin.DROPOUT_RATE=0.0",
                f"--gin.CHECKPOINT='{trained['checkpoint']}'",
                f"--gin.INPUT_FILE='{tmp_path / 'in.txt'}'", f"--gin.OUTPUT_FILE='{out}'",
                f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}", f"--gin.INFER_BATCH_SIZE={BATCH}",
                f"--gin.COMMUNITIES=['{trained['manifest']}']"])
  finally:
    gin.clear_config()
  report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert {k: report[k] for k in ("input_format", "num_read", "num_written", "num_truncated",
                                 "step")} == {"input_format": "text", "num_read": 3,
                                              "num_written": 3, "num_truncated": 1, "step": 25}
  rows = _rows(out)
  assert [r["input"] for r in rows] == texts
  assert all(set(r) == {"input", "prediction"} and isinstance(r["prediction"], str) for r in rows)
  # The last input is cut to 15 tokens + EOS, as the tasks cut theirs.
  assert [r["prediction"] for r in rows] == _direct(trained, texts)
  assert rows[0]["prediction"] == "yes"


def test_records_render_the_inputs_of_their_tasks(trained):
  records_file = trained["manifest"].parent / "test.jsonl"
  fmt, inputs = inference.read_inputs(records_file, fmt="label_only")
  records = [r for _, r in records_lib.iter_records(records_file)]
  assert fmt == "records"
  assert [(x.id, x.text, x.line) for x in inputs] == [
      (r.id, formats.render_inputs(r.question, r.choices), i + 1) for i, r in enumerate(records)]
  assert inputs[0] == inference.InferInput("Is 100 a number?", 1, "test100")


def test_read_inputs_jsonl_and_step_by_step_records(trained, tmp_path):
  path = tmp_path / "in.jsonl"
  path.write_text('{"inputs": "Is 3 a number?", "id": 7}\n{"inputs": "Is 4 a number?"}\n')
  fmt, inputs = inference.read_inputs(path)
  assert fmt == "jsonl"
  assert inputs == [inference.InferInput("Is 3 a number?", 1, "7"),
                    inference.InferInput("Is 4 a number?", 2)]
  fmt, inputs = inference.read_inputs(trained["manifest"].parent / "train.jsonl",
                                  fmt="step_by_step", part="predict")
  assert fmt == "records" and len(inputs) == 24
  assert inputs[0] == inference.InferInput("predict: Is 0 a number?", 1, "train0")
  with pytest.raises(ValueError, match="only step_by_step has parts"):
    inference.read_inputs(trained["manifest"].parent / "train.jsonl", fmt="step_by_step")


@pytest.mark.parametrize("name,content,error", [
    ("blank.txt", "Is 1 a number?\n\nIs 2 a number?\n", r"blank\.txt:2: empty line"),
    ("bad.jsonl", '{"inputs": "ok"}\n{"inputs": 3}\n', r"bad\.jsonl:2: field 'inputs'"),
    ("broken.jsonl", '{"inputs": "ok"}\n{"inputs": \n', r"broken\.jsonl:2: invalid JSON"),
    ("list.jsonl", '["Is 1 a number?"]\n', r"list\.jsonl:1: expected a JSON object"),
    ("latin1.txt", b"ok\n\xe9t\xe9\n", r"latin1\.txt:2: not UTF-8"),
])
def test_bad_lines_name_file_and_line_before_loading_a_model(tmp_path, name, content, error):
  path = tmp_path / name
  (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
  with pytest.raises(ValueError, match=error):
    # The checkpoint does not exist: inputs are checked first.
    inference.infer(model=None, checkpoint=str(tmp_path / "none"), input_file=str(path),
                    output_file=str(tmp_path / "out.jsonl"), task_feature_lengths=LENGTHS,
                    **train_helpers.infer_settings())
  assert not (tmp_path / "out.jsonl").exists()


def test_bad_record_line_is_named(tmp_path):
  path = tmp_path / "records.jsonl"
  path.write_text('{"question": "Is 1 a number?"}\n')
  with pytest.raises(records_lib.RecordError, match=r"records\.jsonl:1"):
    inference.read_inputs(path)
