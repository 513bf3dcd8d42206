"""Two evaluations compared: pairing by id, the paired interval, chance, bad files."""

import json

import numpy as np
import pytest

from cdc_jax.coalitions import compare
from cdc_jax.data import records as R


def _write(path, outcomes, *, order=None):
  ids = list(outcomes) if order is None else order
  path.write_text("".join(json.dumps({"id": i, "correct": outcomes[i], "gold_answer": "no",
                                      "parsed_answer": "no" if outcomes[i] else ""}) + "\n"
                          for i in ids))
  return path


def test_paired_difference_and_chance(tmp_path):
  rng = np.random.default_rng(0)
  a = {f"q{i}": bool(rng.random() < 0.3) for i in range(400)}
  b = {k: (v or rng.random() < 0.5) for k, v in a.items()}  # B right wherever A is, and more.
  # B's file lists the examples in another order: pairing is by id.
  pa = _write(tmp_path / "a.jsonl", a)
  pb = _write(tmp_path / "b.jsonl", b, order=sorted(b, reverse=True))
  train = tmp_path / "train.jsonl"
  R.write_records(train, [R.TraceRecord(
      id=f"t{i}", community="c", split="train", question=f"q {i}?", answer="no" if i % 3 else "yes",
      answer_type="boolean", rationales={}, teacher="oracle",
      provenance={"source": "test", "license": "CC0-1.0"}) for i in range(30)])
  out = compare.compare(pa, pb, names=("a", "b"), train=train, resamples=1000)
  diff = out["difference"]
  true = np.mean(list(b.values())) - np.mean(list(a.values()))
  assert diff["value"] == pytest.approx(true)
  assert diff["significant"] and 0 < diff["low"] <= true <= diff["high"]
  # Paired: the difference is never negative on any resample, so its interval stays >= 0.
  assert diff["low"] >= 0
  se = np.sqrt(0.3 * 0.7 / 400)  # Closed form for A's accuracy.
  acc = out["a"]["accuracy"]
  assert acc["high"] - acc["low"] == pytest.approx(2 * 1.96 * se, rel=0.25)
  assert out["chance"] == {"uniform": 0.5, "majority_class": "no", "majority": 1.0, "chance": 1.0}
  same = compare.compare(pa, pa, names=("a", "a2"))
  assert same["difference"]["low"] == same["difference"]["high"] == 0.0


def test_unpaired_or_bad_files_are_named(tmp_path):
  pa = _write(tmp_path / "a.jsonl", {"x": True, "y": False})
  pb = _write(tmp_path / "b.jsonl", {"x": True, "z": False})
  with pytest.raises(ValueError, match="lacks example ids y"):
    compare.compare(pa, pb)
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"id": "x", "correct": true}\n{"id": "x", "correct": false}\n')
  with pytest.raises(ValueError, match="bad.jsonl:2: example id 'x' appears twice"):
    compare.read_predictions(bad)


def test_multiple_choice_chance_scores_the_majority_position(tmp_path):
  def records(split, rows):
    return [R.TraceRecord(id=f"{split}{i}", community="c", split=split, question=f"q {i}?",
                          answer=choices[pos], answer_type="choice", rationales={},
                          choices=tuple(choices), teacher="oracle",
                          provenance={"source": "test", "license": "CC0-1.0"})
            for i, (choices, pos) in enumerate(rows)]
  # Answer texts never repeat; position (b) is the training majority.
  train = records("train", [([f"w{i}a", f"w{i}b", f"w{i}c"], 1 if i % 4 else 0)
                            for i in range(8)])
  test = records("test", [([f"t{i}a", f"t{i}b", f"t{i}c"], 1 if i < 3 else 2) for i in range(4)])
  R.write_records(tmp_path / "train.jsonl", train)
  R.write_records(tmp_path / "test.jsonl", test)
  preds = tmp_path / "p.jsonl"
  preds.write_text("".join(json.dumps({"id": r.id, "correct": False, "gold_answer": r.answer})
                           + "\n" for r in test))
  with pytest.raises(ValueError, match="pass the test records"):
    compare.compare(preds, preds, train=tmp_path / "train.jsonl")
  out = compare.compare(preds, preds, train=tmp_path / "train.jsonl", test=tmp_path / "test.jsonl")
  assert out["chance"] == {"uniform": pytest.approx(1 / 3), "majority_class": "choice (b)",
                           "majority": 0.75, "chance": 0.75}
  first = (tmp_path / "test.jsonl").read_text().splitlines()[0]
  (tmp_path / "short.jsonl").write_text(first + "\n")
  with pytest.raises(ValueError, match=r"short.jsonl: no test record for example ids \['test1'"):
    compare.compare(preds, preds, train=tmp_path / "train.jsonl", test=tmp_path / "short.jsonl")
