"""Tests of the coalition results table (cdc_jax.coalitions.results)."""

from __future__ import annotations

import json

import pytest

from cdc_jax.coalitions import results
from cdc_jax.coalitions.results import RunResult


def _row(run="r0", members=("b", "a"), **overrides) -> RunResult:
  fields = dict(run=run, members=members, level=6, format="cot_label", seed=0,
                accuracy={"b": 0.5, "a": 0.25, "c": 0.125},
                num_examples={"a": 8, "b": 4, "c": 2}, train_examples={"a": 80, "b": 40},
                steps=10, wall_s=2)
  fields.update(overrides)
  return RunResult(**fields)


def test_row_is_normalised():
  row = _row()
  assert row.members == ("a", "b") and row.coalition == frozenset("ab")
  assert list(row.accuracy) == ["a", "b", "c"]
  assert row.wall_s == 2.0 and isinstance(row.wall_s, float)
  assert _row(eps=3).eps == 3.0


def test_jsonl_round_trip_and_atomic_write(tmp_path):
  rows = [_row(), _row("r1", proportions={"a": 0.25, "b": 0.75}, eps=0.5, selection="correct",
                       seed=3)]
  path = tmp_path / "sweep" / "results.jsonl"
  assert results.write_results(path, rows) == 2
  assert results.read_results(path) == rows
  assert [p.name for p in path.parent.iterdir()] == ["results.jsonl"]  # No temp file left.
  first = json.loads(path.read_text().splitlines()[0])
  assert first["members"] == ["a", "b"] and first["proportions"] is None


def _write_lines(path, objs):
  path.write_text("".join(json.dumps(o) + "\n" for o in objs))


@pytest.mark.parametrize("change, field, message", [
    ({"level": 7}, "level", "invalid rationale level 7"),
    ({"format": "cot"}, "format", "unknown target format 'cot'"),
    ({"seed": 1.5}, "seed", "expected an integer"),
    ({"members": []}, "members", "at least one community"),
    ({"members": ["a", "a"]}, "members", "duplicate community"),
    ({"members": ["A"]}, "members", "invalid community name 'A'"),
    ({"proportions": {"a": 0.5, "b": 0.6}}, "proportions", "sum to 1.1"),
    ({"proportions": {"a": 1.0}}, "proportions", r"keys \['a'\] are not the members"),
    ({"eps": 0}, "eps", "positive finite number"),
    ({"selection": ""}, "selection", "non-empty string"),
    ({"accuracy": {"a": 0.5, "c": 0.1}}, "accuracy", r"members \['b'\] were not evaluated"),
    ({"accuracy": {"a": 1.5, "b": 0.1, "c": 0.1}}, "accuracy", r"a: expected a number in \[0, 1\]"),
    ({"num_examples": {"a": 8, "b": 4}}, "num_examples", "differ from accuracy's"),
    ({"num_examples": {"a": 8, "b": 0, "c": 2}}, "num_examples", "b: expected a positive integer"),
    ({"train_examples": {"a": 1}}, "train_examples", "are not the members"),
    ({"steps": -1}, "steps", "non-negative integer"),
    ({"wall_s": float("nan")}, "wall_s", "non-negative finite number"),
    ({"colour": "red"}, "colour", "unknown field"),
    ({"run": None}, "run", "non-empty string"),
])
def test_read_errors_name_file_line_and_field(tmp_path, change, field, message):
  good = _row().to_json()
  path = tmp_path / "results.jsonl"
  _write_lines(path, [good, {**good, "run": "r1", **change}])
  with pytest.raises(results.ResultError, match=rf"results\.jsonl:2: field '{field}': .*{message}"):
    results.read_results(path)


def test_read_errors_on_missing_field_blank_line_bad_json_and_duplicates(tmp_path):
  good = _row().to_json()
  path = tmp_path / "results.jsonl"
  _write_lines(path, [{k: v for k, v in good.items() if k != "steps"}])
  with pytest.raises(results.ResultError, match=r"results\.jsonl:1: field 'steps': missing"):
    results.read_results(path)
  optional = {k: v for k, v in good.items() if k not in ("eps", "selection", "proportions")}
  _write_lines(path, [optional])
  assert results.read_results(path)[0].eps is None
  path.write_text(json.dumps(good) + "\n\n")
  with pytest.raises(results.ResultError, match=r"results\.jsonl:2: empty line"):
    results.read_results(path)
  path.write_text(json.dumps(good) + "\n{oops\n")
  with pytest.raises(results.ResultError, match=r"results\.jsonl:2: invalid JSON"):
    results.read_results(path)
  _write_lines(path, [good, {**good, "seed": 1}])
  with pytest.raises(results.ResultError,
                     match=r"results\.jsonl:2: field 'run': duplicate run id 'r0' \(first at "
                     r".*results\.jsonl:1\)"):
    results.read_results(path)
  with pytest.raises(results.ResultError, match="nothing.jsonl: file not found"):
    results.read_results(tmp_path / "nothing.jsonl")


def test_csv_has_one_column_per_community(tmp_path):
  rows = [_row(), _row("r1", members=("c",), accuracy={"c": 0.5}, num_examples={"c": 2},
                       train_examples={"c": 20}, eps=1.0, selection="all")]
  path = tmp_path / "results.csv"
  assert results.write_results_csv(path, rows) == 2
  assert path.read_text().splitlines() == [
      "run,members,level,format,seed,eps,selection,steps,wall_s,acc_a,acc_b,acc_c,test_a,test_b,"
      "test_c,train_a,train_b,train_c,prop_a,prop_b,prop_c",
      "r0,a+b,6,cot_label,0,,,10,2.0,0.25,0.5,0.125,8,4,2,80,40,,,,",
      "r1,c,6,cot_label,0,1.0,all,10,2.0,,,0.5,,,2,,,20,,,",
  ]


def test_collect_results_and_load_sweep(tmp_path):
  sweep = tmp_path / "sweep"
  rows = [_row("r1", seed=1), _row("r0")]
  for row in rows:
    assert results.write_result(sweep / row.run, row) == sweep / row.run / "result.json"
  (sweep / "r2").mkdir()
  (sweep / ".hidden").mkdir()
  assert results.collect_results(sweep) == [rows[1], rows[0]]  # Sorted by directory.
  assert [p.name for p in results.unfinished_runs(sweep)] == ["r2"]
  assert results.load_sweep(sweep) == ([rows[1], rows[0]], sweep)
  results.write_results(sweep / "results.jsonl", rows[:1])
  assert results.load_sweep(sweep) == (rows[:1], sweep / "results.jsonl")
  (sweep / "r2" / "result.json").write_text(json.dumps(_row("r0").to_json()))
  with pytest.raises(results.ResultError, match=r"r2/result\.json: field 'run': duplicate run id"):
    results.collect_results(sweep)
  (sweep / "r2" / "result.json").write_text("{\n  bad")
  with pytest.raises(results.ResultError, match=r"r2/result\.json:2: invalid JSON"):
    results.collect_results(sweep)
  with pytest.raises(results.ResultError, match="sweep directory not found"):
    results.collect_results(tmp_path / "absent")
