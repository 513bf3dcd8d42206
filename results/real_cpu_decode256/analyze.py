"""Pairs results/real_cpu's StrategyQA predictions (128-token budget) with the 256-token
re-evaluations here; prints and writes summary.md. Run from the repo root:

  python results/real_cpu_decode256/analyze.py

Intervals: the sweep report's paired bootstrap (cdc_jax.coalitions.bootstrap) over the 200 test
questions and the 2 seeds, 2000 resamples; every setting shares the same draws, so differences
are paired.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cdc_jax.coalitions import bootstrap, compare
from cdc_jax.models import llama_tokenizer, llama_weights

HERE = Path(__file__).resolve().parent
SWEEP = HERE.parent / "real_cpu"
COALITIONS = {"alone": "strategyqa", "grand coalition": "csqa_strategyqa_svamp"}
SEEDS = (0, 1)


def _outcomes(root: Path, coalition: str, level: int) -> list[dict[str, dict]]:
  """Per seed, id -> prediction row of StrategyQA in ``coalition`` at ``level``."""
  return [compare.read_predictions(
      root / f"{coalition}.L{level}.cot_label.s{seed}" / "eval"
      / f"cdc.strategyqa.L{level}.cot_label.predictions.jsonl") for seed in SEEDS]


def _consistency(settings: dict[str, list[dict[str, dict]]]) -> str:
  """Checks that the 256-token runs reproduce the 128-token decoding: a prediction that ended
  well within 128 tokens (under 120) is identical, a longer one starts with the same text."""
  tokenizer = llama_tokenizer.tokenizer_from_gguf(llama_weights.smollm2_gguf_path())
  short = same = long_ = same_start = 0
  for key in settings:
    if not key.endswith(", 128"):
      continue
    for before, after in zip(settings[key], settings[key[:-3] + "256"]):
      for i, row in before.items():
        if len(tokenizer.encode(row["prediction"])) < 120:
          short += 1
          same += after[i]["prediction"] == row["prediction"]
        else:
          long_ += 1
          same_start += after[i]["prediction"].startswith(row["prediction"][:200])
  return (f"Consistency: {same} of {short} predictions that ended within 120 tokens are identical "
          f"under 256; {same_start} of {long_} longer ones start with the same 200 characters.")


def main() -> None:
  settings, unparsed = {}, {}
  for name, coalition in COALITIONS.items():
    for level in (1, 3):
      for budget, root in ((128, SWEEP), (256, HERE)):
        key = f"{name}, L{level}, {budget}"
        settings[key] = _outcomes(root, coalition, level)
        unparsed[key] = sum(not r.get("parsed_answer") for seed in settings[key]
                            for r in seed.values())
  ids = tuple(sorted(next(iter(settings.values()))[0]))
  correct = {key: {"strategyqa": np.stack([
      bootstrap.align({i: r["correct"] for i, r in seed.items()}, ids, what=f"{key} s{s}")
      for s, seed in zip(SEEDS, rows)])} for key, rows in settings.items()}
  boot = bootstrap.Bootstrap(bootstrap.Outcomes({"strategyqa": ids}, correct))
  acc = {key: boot.accuracy(key, "strategyqa") for key in settings}
  fmt = bootstrap.format_interval
  lines = [f"StrategyQA, cot_label, 2 seeds x {len(ids)} test questions; chance 0.500.", "",
           "| setting | decoding budget | accuracy | unparsed answers (of 400) |",
           "|---|---|---|---|"]
  for key in settings:
    name, level, budget = key.split(", ")
    lines.append(f"| {name}, {level} | {budget} tokens | {fmt(boot.interval(acc[key]))} | "
                 f"{unparsed[key]} |")
  lines += ["", "| difference | alone | grand coalition |", "|---|---|---|"]
  contrasts = (("L3 at 256 - L3 at 128", "L3, 256", "L3, 128"),
               ("L1 at 256 - L1 at 128", "L1, 256", "L1, 128"),
               ("L3 - L1, both at 128", "L3, 128", "L1, 128"),
               ("L3 - L1, both at 256", "L3, 256", "L1, 256"))
  for label, a, b in contrasts:
    cells = [fmt(boot.interval(acc[f"{name}, {a}"] - acc[f"{name}, {b}"]), signed=True, mark=True)
             for name in COALITIONS]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  lines += ["", "~: the 95% interval contains 0 (not significant).", "", _consistency(settings)]
  text = "\n".join(lines) + "\n"
  (HERE / "summary.md").write_text(text, encoding="utf-8")
  print(text, end="")


if __name__ == "__main__":
  main()
