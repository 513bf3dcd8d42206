"""Two evaluations of one test split compared: accuracies and their paired difference, with 95% CIs.

    python -m cdc_jax.coalitions.compare \
        runs/smollm2_stqa_zs/eval/cdc.strategyqa.L1.label_only.predictions.jsonl \
        runs/smollm2_stqa/eval/cdc.strategyqa.L1.label_only.predictions.jsonl \
        --names zero-shot,fine-tuned --train runs/real/strategyqa/train.jsonl \
        --test runs/real/strategyqa/test.jsonl

Reads ``evaluate``'s prediction files, pairs them by example id (an id in one
file and not the other is an error), and bootstraps the test examples (the
same resample for both, so the difference is paired). Prints each accuracy,
the share answered (a parsable answer), the difference B - A with its 95%
interval and whether it excludes 0, and the chance level: the better of a
uniform guess over the answer's choices and the train split's majority class
(for multiple choice a position among the choices, scored with ``--test``'s
records).
Writes the same as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cdc_jax import io as io_lib
from cdc_jax.coalitions import bootstrap, examples
from cdc_jax.data import records as records_lib


def read_predictions(path: str | Path) -> dict[str, dict[str, Any]]:
  """Prediction rows of one evaluation by example id; names the file and line of a bad row."""
  rows: dict[str, dict[str, Any]] = {}
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      try:
        row = json.loads(line)
        key, correct = str(row["id"]), bool(row["correct"])
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}:{number}: not a prediction row with 'id' and 'correct' "
                         f"({e})") from None
      if key in rows:
        raise ValueError(f"{path}:{number}: example id {key!r} appears twice")
      rows[key] = {**row, "correct": correct}
  if not rows:
    raise ValueError(f"{path}: no prediction rows")
  return rows


def chance_level(train: Sequence[records_lib.TraceRecord], gold: Sequence[str],
                 choices: Sequence[Sequence[str] | None] | None = None) -> dict:
  """The better of a uniform guess and the train split's majority class, on the test golds.

  ``choices`` are each test question's options, needed when the majority class
  is a choice position (multiple choice).
  """
  majority = examples.majority_class(train)
  if majority.position is not None and choices is None:
    raise ValueError("multiple-choice questions: the majority class is a choice position; pass "
                     "the test records (--test) to score it")
  choices = list(choices) if choices is not None else [None] * len(gold)
  answer_type = train[0].answer_type
  uniform = float(np.mean([examples.chance_of(r) for r in train]))
  majority_acc = float(np.mean([majority.correct(g, answer_type, ch)
                                for g, ch in zip(gold, choices)]))
  return {"uniform": uniform, "majority_class": majority.describe(), "majority": majority_acc,
          "chance": max(uniform, majority_acc)}


def _test_choices(path: str | Path, ids: Sequence[str]) -> list[Sequence[str] | None]:
  """Each of ``ids``' choices from the test records at ``path``; names a missing id."""
  by_id = {r.id: r for r in records_lib.read_records(path)}
  missing = [i for i in ids if i not in by_id]
  if missing:
    raise ValueError(f"{path}: no test record for example ids {missing[:5]}"
                     f"{' ...' if len(missing) > 5 else ''} ({len(missing)} of {len(ids)})")
  return [by_id[i].choices for i in ids]


def compare(a: str | Path, b: str | Path, *, names: Sequence[str] = ("A", "B"),
            train: str | Path | None = None, test: str | Path | None = None,
            resamples: int = bootstrap.DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, Any]:
  """Accuracies of ``a`` and ``b`` and their paired difference, each with a 95% interval."""
  rows_a, rows_b = read_predictions(a), read_predictions(b)
  ids = sorted(rows_a)
  x = bootstrap.align({k: r["correct"] for k, r in rows_a.items()}, ids, what=str(a))
  y = bootstrap.align({k: r["correct"] for k, r in rows_b.items()}, ids, what=str(b))
  n = len(ids)
  weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=resamples) / n
  out: dict[str, Any] = {"test_examples": n, "resamples": resamples, "method":
                         "paired bootstrap over test examples, 95% percentile interval"}
  for name, v, rows in ((names[0], x, rows_a), (names[1], y, rows_b)):
    acc = bootstrap.interval(float(v.mean()), weights @ v)
    answered = float(np.mean([bool(r.get("parsed_answer")) for r in rows.values()]))
    out[name] = {"accuracy": dataclasses_dict(acc), "answered": answered}
  diff = bootstrap.interval(float((y - x).mean()), weights @ (y - x))
  out["difference"] = {**dataclasses_dict(diff), "of": f"{names[1]} - {names[0]}",
                       "significant": diff.excludes_zero}
  if train is not None:
    gold = [str(rows_a[i].get("gold_answer", "")) for i in ids]
    choices = _test_choices(test, ids) if test is not None else None
    out["chance"] = chance_level(records_lib.read_records(train), gold, choices)
  return out


def dataclasses_dict(value: bootstrap.Interval) -> dict[str, float]:
  return {"value": value.value, "low": value.low, "high": value.high}


def _fmt(i: dict[str, float], signed: bool = False) -> str:
  sign = "+" if signed else ""
  return f"{i['value']:{sign}.3f} [{i['low']:{sign}.3f}, {i['high']:{sign}.3f}]"


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("a")
  parser.add_argument("b")
  parser.add_argument("--names", default="A,B")
  parser.add_argument("--train", default=None, help="train split (JSON Lines) for the majority")
  parser.add_argument("--test", default=None,
                      help="test split (JSON Lines): each question's choices, for multiple choice")
  parser.add_argument("--resamples", type=int, default=bootstrap.DEFAULT_RESAMPLES)
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  names = tuple(args.names.split(","))
  if len(names) != 2:
    parser.error("--names takes two names, e.g. zero-shot,fine-tuned")
  result = compare(args.a, args.b, names=names, train=args.train, test=args.test,
                   resamples=args.resamples)
  print(f"{result['test_examples']} test examples; {result['method']}, "
        f"{result['resamples']} resamples")
  for name in names:
    r = result[name]
    print(f"  {name:<12} accuracy {_fmt(r['accuracy'])}  answered {r['answered']:.3f}")
  d = result["difference"]
  print(f"  {d['of']}: {_fmt(d, signed=True)} "
        f"({'excludes 0' if d['significant'] else 'contains 0: not significant'})")
  if "chance" in result:
    c = result["chance"]
    print(f"  chance {c['chance']:.3f} (uniform {c['uniform']:.3f}; majority class "
          f"{c['majority_class']!r} {c['majority']:.3f})")
  if args.out:
    io_lib.atomic_write_text(args.out, json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
  main()
