"""Any community in: leveled_cot for any dataset name, and the field-mapping importer.

The datasets here are generated, with file and field names no importer knows;
they come in by command-line flags alone, and the fields one trains and
evaluates with no code change.
"""

import csv
import doctest
import json
from pathlib import Path

import pytest

from cdc_jax.data import import_traces, importers, records
from cdc_jax.data.importers import detect, fields, sources
from cdc_jax.models.encoder_decoder import build_model
from cdc_jax.models.t5_config import t5_config
from cdc_jax.student import evaluation, training
from cdc_jax.tasks import catalog
from cdc_jax.tasks import lengths as lengths_lib
from tests import train_helpers

_ANIMALS = [("bat", "yes"), ("dog", "yes"), ("trout", "no"), ("eagle", "no"), ("whale", "yes"),
            ("frog", "no"), ("cat", "yes"), ("shark", "no")]


def _write_json(path: Path, value) -> Path:
  path.write_text(json.dumps(value, indent=1))
  return path


# ---------------------------------------------------------------------------
# leveled_cot: a dataset name none of the presets has.


@pytest.fixture
def riddles(tmp_path):
  """Level files ``riddles_mixtral_level1.json`` and ``..._level3_ranked.json``, gold, test."""
  src = tmp_path / "riddles_src"
  src.mkdir()
  train, test = _ANIMALS[:6], _ANIMALS[6:]
  _write_json(src / "riddles_onlyans.json",
              [{"instruction": f"Q: Is a {a} a mammal?",
                "output": "True" if m == "yes" else "False"} for a, m in train])
  _write_json(src / "riddles_test.json",
              [{"instruction": f"Is a {a} a mammal?", "label": m} for a, m in test])
  # Level 1 unranked, level 3 ranked; the teacher is wrong about the frog at level 1.
  _write_json(src / "riddles_mixtral_level1.json", [
      {"instruction": f"Is a {a} a mammal?",
       "output": f"A {a} {'nurses' if m == 'yes' or a == 'frog' else 'lays eggs'}. The answer is "
                 f"{'yes' if m == 'yes' or a == 'frog' else 'no'}."} for a, m in train])
  _write_json(src / "riddles_mixtral_level3_ranked.json", [
      {"instruction": f"Q: Is a {a} a mammal?",
       "output": f"Mammals nurse their young; a {a} {'does' if m == 'yes' else 'does not'}. "
                 f"So the answer is {m}."} for a, m in reversed(train[:5])])
  return src


def test_leveled_cot_takes_any_dataset_by_its_layout(riddles):
  imported = importers.import_leveled_cot(riddles, dataset="riddles", community="riddles",
                                          license="CC-BY-4.0", source="https://example.org/r")
  report = imported.report
  assert report.records == {"train": 6, "test": 2}
  assert report.traces["train"] == {1: 6, 3: 5} and report.absent["train"] == {3: 1}
  assert report.correct["train"] == {1: 5, 3: 5}
  assert report.teacher_accuracy("train", 1) == pytest.approx(5 / 6)
  assert any("answer type 'boolean' detected from riddles_onlyans.json" in n for n in report.notes)
  manifest = imported.manifest
  assert (manifest.answer_type, manifest.levels, manifest.license) == ("boolean", (1, 3),
                                                                       "CC-BY-4.0")
  assert manifest.teacher == "mixtral"
  assert "riddles" in manifest.description and "https://example.org/r" in manifest.description
  record = imported.records["train"][0]
  assert record.question == "Is a bat a mammal?" and record.answer == "yes"
  assert record.rationales == {1: "A bat nurses.", 3: "Mammals nurse their young; a bat does."}
  assert record.provenance["source"] == "https://example.org/r"
  assert record.provenance["dataset"] == "riddles" and record.provenance["teacher"] == "mixtral"
  assert "upstream" not in record.provenance
  text = json.dumps([r.to_json() for recs in imported.records.values() for r in recs])
  for preset_word in ("csqa", "strategyqa", "EIT-NLP", "llama"):
    assert preset_word not in text


def test_leveled_cot_flags_override_detection(riddles, tmp_path):
  (riddles / "riddles_onlyans.json").rename(riddles / "gold answers.json")
  (riddles / "riddles_test.json").rename(riddles / "held_out.json")
  with pytest.raises(sources.SourceError, match=r"expected one gold-answers file "
                     r"riddles_onlyans.json, found \[\]: name it with gold_file"):
    importers.import_leveled_cot(riddles, dataset="riddles", community="r", license="x")
  with pytest.raises(ValueError, match=r"give the license of its traces \(--license\)"):
    importers.import_leveled_cot(riddles, dataset="riddles", community="r")
  out = tmp_path / "out"
  status = import_traces.main([
      "--format=leveled_cot", f"--source={riddles}", "--dataset=riddles", f"--out={out}",
      "--community=riddles_text", "--gold_file=gold answers.json", "--test_file=held_out.json",
      "--level_files=1:riddles_mixtral_level1.json", "--answer_type=text",
      "--teacher_name=Mixtral-8x7B", "--license=CC0-1.0", "--description=Animal riddles"])
  assert status == 0
  community = records.load_community(out)
  assert community.manifest.answer_type == "text" and community.manifest.levels == (1,)
  assert community.manifest.description == "Animal riddles"
  assert community.manifest.teacher == "Mixtral-8x7B"
  assert {r.answer for r in community.records["train"]} == {"true", "false"}
  assert len(community.records["test"]) == 2


def test_choice_style_is_detected_and_can_be_insisted_on(tmp_path):
  _write_json(tmp_path / "quiz_onlyans.json", [
      {"instruction": "Q: Where do fish live? Answer choices: A: sea, B: desert", "output": "A"},
      {"instruction": "Q: What is hot? Answer choices: A: ice, B: fire", "output": "B"}])
  _write_json(tmp_path / "quiz_t_level6.json", [
      {"instruction": "Where do fish live? Answer choices: A: sea, B: desert",
       "output": "Fish swim in water. The answer is A"}])
  imported = importers.import_leveled_cot(tmp_path, dataset="quiz", community="quiz",
                                          license="CC0-1.0")
  assert imported.manifest.answer_type == "choice"
  assert [r.answer for r in imported.records["train"]] == ["sea"]
  assert any("choice style ['comma']" in n for n in imported.report.notes)
  with pytest.raises(sources.SourceError, match=r"item 0: field 'instruction': choices are not "
                     r"in the 'lines' style"):
    importers.import_leveled_cot(tmp_path, dataset="quiz", community="quiz", license="CC0-1.0",
                                 choice_style="lines")


@pytest.mark.parametrize("module", [detect, fields])
def test_doctests(module):
  result = doctest.testmod(module)
  assert result.failed == 0 and result.attempted >= 2


def test_detection_helpers():
  assert detect.detect_answer_type(["yes", "FALSE"]) == "boolean"
  assert detect.detect_answer_type(["1,200", "-3"]) == "number"
  assert detect.detect_answer_type(["12 apples"]) == "text"
  assert detect.detect_answer_type(["x"], has_choices=True) == "choice"
  with pytest.raises(ValueError, match="no answers"):
    detect.detect_answer_type([""])


# ---------------------------------------------------------------------------
# fields: a layout no importer names, by flags alone; then train and evaluate.


def _zoo(src: Path) -> None:
  """A CSV train file, a JSON Lines test file and a file whose rows name their split."""
  src.mkdir()
  with open(src / "zoo_quiz.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["uid", "prompt", "opts", "gold", "why_long", "why_short"])
    for i, (animal, mammal) in enumerate(_ANIMALS * 2):
      gold = "A" if mammal == "yes" else "B"
      long = (f"A {animal} {'nurses' if mammal == 'yes' else 'does not nurse'} its young. "
              f"The answer is {gold}.") if i != 3 else ""
      writer.writerow([f"z{i}", f"Which class is the {animal} in (take {i})?",
                       "mammal|not a mammal", gold, long, f"{animal}: {mammal}"])
  test = [{"uid": f"t{i}", "prompt": f"Which class is the {a} in (test {i})?",
           "opts": ["mammal", "not a mammal"], "gold": "mammal" if m == "yes" else "not a mammal"}
          for i, (a, m) in enumerate(_ANIMALS[:4])]
  (src / "zoo_eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
  more = [{"meta": {"key": f"e{i}"}, "ask": f"Is the {a} a mammal?", "truth": m,
           "stage": "eval" if i % 2 else "fit"} for i, (a, m) in enumerate(_ANIMALS)]
  (src / "zoo_more.jsonl").write_text("".join(json.dumps(r) + "\n" for r in more))


def test_fields_importer_cli_then_train_and_evaluate(tmp_path, capsys):
  src = tmp_path / "zoo"
  _zoo(src)
  out = tmp_path / "communities" / "zoo"
  common = [f"--source={src}", "--format=fields", "--license=CC-BY-SA-4.0"]
  mapping = ["--question_field=prompt", "--answer_field=gold", "--choices_field=opts",
             "--rationale_fields=6:why_long,1:why_short", "--id_field=uid"]
  # One field mapping covers every file of an import: a file with other names is refused.
  status = import_traces.main(common + mapping + [
      f"--out={out}", "--community=zoo", "--train_file=zoo_quiz.csv", "--test_file=zoo_more.jsonl"])
  assert status == 1
  assert "zoo_more.jsonl:1: item 0: field 'opts': missing" in capsys.readouterr().err
  status = import_traces.main(common + mapping + [
      f"--out={out}", "--community=zoo", "--train_file=zoo_quiz.csv", "--test_file=zoo_eval.jsonl",
      "--provenance_source=https://example.org/zoo", "--teacher=zoo-keeper-llm",
      "--description=Zoo class quiz"])
  assert status == 0, capsys.readouterr().err
  printed = capsys.readouterr().out
  assert ("community zoo (fields/zoo_eval.jsonl, zoo_quiz.csv, teacher zoo-keeper-llm, keep=all): "
          "20 records") in printed
  assert "teacher accuracy: L6 100.0% (15/15, 0 unparsed)" in printed
  assert "L6: 1 questions absent" in printed
  assert "answer type 'choice' detected from field 'gold'" in printed
  zoo = records.load_community(out)
  assert zoo.manifest.answer_type == "choice" and zoo.manifest.levels == (1, 6)
  assert zoo.manifest.license == "CC-BY-SA-4.0" and zoo.manifest.teacher == "zoo-keeper-llm"
  assert zoo.manifest.description == "Zoo class quiz"
  first = zoo.records["train"][0]
  assert (first.id, first.question, first.choices, first.answer) == (
      "z0", "Which class is the bat in (take 0)?", ("mammal", "not a mammal"), "mammal")
  assert first.rationales == {6: "A bat nurses its young.", 1: "bat: yes"}
  assert first.teacher_answer == "mammal"
  assert first.provenance["source"] == "https://example.org/zoo"
  assert first.provenance["items"] == {"gold": "zoo_quiz.csv#0", "L6": "zoo_quiz.csv#0",
                                       "L1": "zoo_quiz.csv#0"}
  assert [r.id for r in zoo.records["test"]] == ["t0", "t1", "t2", "t3"]

  # Rows that name their split, nested ids, renamed split values, default provenance.
  more = tmp_path / "communities" / "zoo_more"
  status = import_traces.main(common + [
      f"--out={more}", "--community=zoo_more", "--file=zoo_more.jsonl", "--split_field=stage",
      "--split_values=eval:test,fit:train", "--question_field=ask", "--answer_field=truth",
      "--id_field=meta.key", "--rationale_fields=6:why"])
  assert status == 0, capsys.readouterr().err
  assert "skipped: 4 train questions: no rationale at any level" in capsys.readouterr().out
  held_out = records.load_community(more)
  assert held_out.manifest.answer_type == "boolean"
  assert [r.id for r in held_out.records["test"]] == ["e1", "e3", "e5", "e7"]
  assert held_out.records["test"][0].provenance["source"] == str(src.resolve())

  # Trains and evaluates with no code change: register, a few steps, decode the test split.
  catalog.register_tasks(embedded=False, communities=[out / "community.json"])
  model = build_model(t5_config("tiny", vocab_size=1024, dropout_rate=0.0))
  lengths = {"inputs": "p100", "targets": 16}  # A percentile of the data, or tokens.
  metrics = training.train(model=model, mixture_or_task_name="cdc.zoo.L6.label_cot",
                           task_feature_lengths=lengths, batch_size=4, train_steps=3,
                           model_dir=str(tmp_path / "run"), tensorboard=False,
                           **train_helpers.train_settings(pack=False, log_every=3,
                                                          checkpoint_every=3))
  assert metrics["loss"] > 0
  run_lengths = json.loads((tmp_path / "run" / "lengths.json").read_text())
  assert run_lengths["examples"] == 15  # The record without a level-6 rationale is left out.
  longest = int(lengths_lib.token_lengths("cdc.zoo.L6.label_cot", "train").inputs.max())
  assert run_lengths["task_feature_lengths"]["inputs"] == longest
  assert run_lengths["inputs_cut"] == 0
  results = evaluation.evaluate(model=model, mixture_or_task_name="cdc.zoo.L6.label_cot",
                                checkpoint=str(tmp_path / "run"), task_feature_lengths=lengths,
                                output_dir=str(tmp_path / "eval"),
                                **train_helpers.eval_settings(batch_size=4))
  assert results["cdc.zoo.L6.label_cot"]["num_examples"] == 4.0
  eval_lengths = json.loads((tmp_path / "eval" / "lengths.json").read_text())
  assert (eval_lengths["split"], eval_lengths["examples"]) == ("test", 4)
  rows = [json.loads(line) for line in
          (tmp_path / "eval" / "cdc.zoo.L6.label_cot.predictions.jsonl").read_text().splitlines()]
  assert [r["id"] for r in rows] == ["t0", "t1", "t2", "t3"]
  assert rows[0]["gold_answer"] == "mammal"


def test_fields_bad_input_names_file_line_and_field(tmp_path):
  (tmp_path / "d.csv").write_text("q,a\nIs it?,maybe\n")
  with pytest.raises(sources.SourceError, match=r"d\.csv:2: item 0: field 'a': 'maybe' is not a "
                     r"boolean answer"):
    importers.import_fields(tmp_path, community="d", files={"train": "d.csv"}, question_field="q",
                            answer_field="a", answer_type="boolean", license="CC0-1.0")
  (tmp_path / "d.csv").write_text("q,a\nIs it?,yes,extra\n")
  with pytest.raises(sources.SourceError, match=r"d\.csv:2: item 0: row has 3 cells, the header 2"):
    fields.read_csv(tmp_path / "d.csv")
  (tmp_path / "d.txt").write_text("")
  with pytest.raises(sources.SourceError, match=r"cannot tell the file format from '\.txt'"):
    fields.read_items(tmp_path / "d.txt")
  (tmp_path / "s.jsonl").write_text(json.dumps({"q": "x?", "a": "yes", "s": "dev"}) + "\n")
  with pytest.raises(sources.SourceError, match=r"s\.jsonl:1: item 0: field 's' is 'dev': "
                     r"expected a split"):
    importers.import_fields(tmp_path, community="d", files={"all": "s.jsonl"}, question_field="q",
                            answer_field="a", split_field="s", license="CC0-1.0")
  with pytest.raises(ValueError, match="keep='correct' needs teacher answers"):
    importers.import_fields(tmp_path, community="d", files={"all": "s.jsonl"}, question_field="q",
                            answer_field="a", split_field="s", split_values={"dev": "validation"},
                            license="CC0-1.0", keep="correct")
  with pytest.raises(ValueError, match="--gold_file is not a flag of --format=fields"):
    import_traces.importer_options(import_traces.parse_args([
        "--format=fields", "--source=x", "--out=y", "--community=z", "--gold_file=g.json"]))
