"""Tests of the coalition sweep report (cdc_jax.coalitions.report) on a synthetic sweep."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from cdc_jax import report as report_cli
from cdc_jax.coalitions import report, results, tables
from cdc_jax.coalitions.results import RunResult

# Accuracy of each member at L6 cot_label (seed mean); other settings shift it.
ACC = {
    ("a",): {"a": 0.50},
    ("b",): {"b": 0.40},
    ("c",): {"c": 0.30},
    ("a", "b"): {"a": 0.60, "b": 0.45},
    ("a", "c"): {"a": 0.55, "c": 0.40},
    ("b", "c"): {"b": 0.35, "c": 0.35},
    ("a", "b", "c"): {"a": 0.65, "b": 0.50, "c": 0.45},
}
SHIFT = {(6, "cot_label"): 0.0, (6, "label_only"): -0.1, (1, "cot_label"): -0.2,
         (1, "label_only"): -0.25}
TEST_EXAMPLES = {"a": 100, "b": 60, "c": 40}


def _row(members, level, fmt, seed, accuracy, **kwargs) -> RunResult:
  tag = "-".join(f"{k}{v}" for k, v in sorted(kwargs.items()) if v is not None)
  return RunResult(
      run=f"{''.join(members)}-L{level}-{fmt}-s{seed}{'-' + tag if tag else ''}",
      members=members, level=level, format=fmt, seed=seed, accuracy=accuracy,
      num_examples={c: TEST_EXAMPLES[c] for c in accuracy},
      train_examples={c: 10 * TEST_EXAMPLES[c] for c in members}, steps=100, wall_s=1.5,
      **kwargs)


def synthetic_sweep() -> list[RunResult]:
  """7 coalitions x 2 levels x 2 formats (2 seeds at L6 cot_label), a proportion
  sweep of {a,b} and private runs of {a} and {a,b}."""
  rows = []
  for (level, fmt), shift in SHIFT.items():
    seeds = (-0.01, 0.01) if (level, fmt) == (6, "cot_label") else (0.0,)
    for seed, noise in enumerate(seeds):
      for members, acc in ACC.items():
        rows.append(_row(members, level, fmt, seed,
                         {c: round(a + shift + noise, 6) for c, a in acc.items()}))
  for share in (0.25, 0.5, 0.75):
    rows.append(_row(("a", "b"), 6, "cot_label", 0,
                     {"a": 0.5 + 0.2 * share, "b": 0.5 - 0.2 * share},
                     proportions={"a": share, "b": 1 - share}))
  for eps in (1.0, 8.0):
    for members in (("a",), ("a", "b")):
      rows.append(_row(members, 6, "cot_label", 0,
                       {c: a - 0.1 / eps for c, a in ACC[members].items()}, eps=eps))
  return rows


def _png_size(path: Path) -> tuple[int, int]:
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
  assert data[12:16] == b"IHDR"
  return struct.unpack(">II", data[16:24])


def test_report_from_result_files(tmp_path, capsys):
  sweep = tmp_path / "sweep"
  rows = synthetic_sweep()
  for row in rows:
    results.write_result(sweep / row.run, row)
  (sweep / "unfinished-run").mkdir()
  out = tmp_path / "out"

  assert report_cli.main([str(sweep), "--out", str(out)]) == 0

  printed = capsys.readouterr().out
  assert f"read {len(rows)} runs (6 settings) from {sweep}" in printed
  assert "1 run directories have no result.json" in printed
  assert f"wrote {out / 'report.md'}" in printed
  expected = ["levels.png", "coalitions.png", "shapley.png", "privacy.png",
              "proportions_a_b_L6_cot_label.png"]
  assert sorted(p.name for p in out.glob("*.png")) == sorted(expected)
  for name in expected:
    width, height = _png_size(out / name)
    assert width >= 400 and height >= 300, (name, width, height)
    assert (out / name).stat().st_size > 10_000, name
  text = (out / "report.md").read_text()
  assert len(rows) == 42
  assert "42 runs read from" in text
  assert "Figure skipped" not in text
  for name in expected:
    assert f"]({name})" in text
  # L6 cot_label, seed-averaged: the grand coalition's row of the incentives table.
  grand = next(line for line in text.splitlines() if line.startswith("| {a,b,c} | 2 |"))
  assert grand.removesuffix(" |").split(" | ")[2:15] == [
      "0.650", "0.500", "0.450", "+0.150", "+0.100", "+0.150", "yes", "0.533", "0.565", "0.450",
      "+0.125", "+0.075", "+0.050"]
  assert "| {b,c} | 2 | - | 0.350 | 0.350 | - | -0.050 | +0.050 | no |" in text
  # Shapley of the total-welfare game at L6 cot_label (hand-computed).
  assert "| a | 0.500 | 0.683 | 0.675 |" in text
  assert "| b | 0.400 | 0.508 | 0.500 |" in text
  assert "| c | 0.300 | 0.408 | 0.400 |" in text
  assert "the Shapley allocation is in the core" in text
  assert "| L6 cot_label | {a,b} | 1.0 | 1 | a: 0.500, b: 0.350 |" in text
  assert "| L6 cot_label | {a,b} | a: 0.25, b: 0.75 | 1 | a: 0.550 | b: 0.450 |" in text


def test_report_notes_missing_runs(tmp_path, capsys):
  rows = [r for r in synthetic_sweep()
          if r.level == 6 and r.format == "cot_label" and r.eps is None and r.proportions is None
          and r.members != ("b", "c")]
  sweep = tmp_path / "sweep"
  assert results.write_results(sweep / results.TABLE_FILENAME, rows) == 12

  assert report_cli.main([str(sweep)]) == 0

  assert f"read 12 runs (1 settings) from {sweep / results.TABLE_FILENAME}" in (
      capsys.readouterr().out)
  assert sorted(p.name for p in sweep.glob("*.png")) == ["coalitions.png"]
  text = (sweep / "report.md").read_text()
  assert "*Figure skipped: needs standalone or grand-coalition runs of a community at two or " \
         "more levels (same format).*" in text
  assert "lacks {b,c}" in text
  assert "skipped, 1 coalition(s) missing: {b,c}" in text
  assert "*Figure skipped: needs runs of a two-community coalition with proportions set" in text
  assert "*Figure skipped: needs runs with a privacy budget eps.*" in text
  assert "| {a,b,c} | 2 | 0.650 | 0.500 | 0.450 | +0.150 | +0.100 | +0.150 | yes |" in text
  # Without {b,c}, a's altruistic contribution to {a,b,c} is unknown; b's and c's are not.
  grand = next(line for line in text.splitlines() if line.startswith("| {a,b,c} |"))
  assert grand.split(" | ")[-3:] == ["-", "+0.075", "+0.050 |"]


def test_summary_table_numbers():
  text = tables.summary_table(synthetic_sweep())
  blocks = text.split("\n\n")
  assert [b.splitlines()[0] for b in blocks] == [
      "== L1 cot_label: 7 coalitions, 1 seed(s) each ==",
      "== L1 label_only: 7 coalitions, 1 seed(s) each ==",
      "== L6 cot_label: 7 coalitions, 2 seed(s) each ==",
      "== L6 cot_label eps=1.0: 2 coalitions, 1 seed(s) each ==",
      "== L6 cot_label eps=8.0: 2 coalitions, 1 seed(s) each ==",
      "== L6 label_only: 7 coalitions, 1 seed(s) each ==",
  ]
  main = blocks[2].splitlines()
  assert main[2].split() == ["community", "{a}", "{b}", "{c}", "{a,b}", "{a,c}", "{b,c}",
                             "{a,b,c}", "shapley"]
  assert main[3].split() == ["a", "0.500", "-", "-", "0.600", "0.550", "-", "0.650", "0.683"]
  assert main[5].split() == ["c", "-", "-", "0.300", "-", "0.400", "0.350", "0.450", "0.408"]
  assert main[7].split() == main[2].split()[:-1]
  assert main[9].split() == ["b", "-", "+0.000", "-", "+0.050", "-", "-0.050", "+0.100"]
  assert blocks[3].splitlines()[-1] == (
      "shapley: needs 1 more coalition(s): {b}")


def test_report_rejects_bad_result_file(tmp_path):
  sweep = tmp_path / "sweep"
  row = synthetic_sweep()[0]
  path = results.write_result(sweep / row.run, row)
  path.write_text(path.read_text().replace('"level": 6', '"level": 9'))
  with pytest.raises(results.ResultError, match=r"result\.json: field 'level': invalid"):
    report_cli.main([str(sweep)])


def test_rerun_into_the_same_directory_removes_figures_it_no_longer_draws(tmp_path):
  rows = synthetic_sweep()
  out = tmp_path / "out"
  report.build_report(rows, out)
  assert (out / "privacy.png").exists() and (out / "shapley.png").exists()
  (out / "notes.png").write_bytes(b"not the report's")  # Not the report's: left alone.
  without_private = [r for r in rows if r.eps is None]

  report.build_report(without_private, out)

  assert not (out / "privacy.png").exists()
  assert sorted(p.name for p in out.glob("*.png")) == sorted(
      ["levels.png", "coalitions.png", "shapley.png", "notes.png",
       "proportions_a_b_L6_cot_label.png"])
  assert "privacy.png" not in (out / "report.md").read_text()


def test_report_draws_accuracy_vs_k_for_key_token_runs(tmp_path):
  rows = [r for r in synthetic_sweep() if r.eps is None and r.proportions is None]
  for k, share in ((1, 0.1), (4, 0.2), (16, 0.3)):
    for members in (("a",), ("a", "b")):
      rows.append(_row(members, 6, "key_tokens", 0,
                       {c: a - 0.3 + share for c, a in ACC[members].items()},
                       selection=f"key_tokens:k={k}"))
  out = tmp_path / "out"

  report.build_report(rows, out)

  text = (out / "report.md").read_text()
  assert "### Accuracy vs key tokens shared (k)\n\n![Accuracy vs key tokens shared (k)]" \
      "(key_tokens_k.png)" in text
  width, height = _png_size(out / "key_tokens_k.png")
  assert width >= 400 and height >= 300
  # Without key-token runs the section is absent, not skipped.
  report.build_report([r for r in rows if r.format != "key_tokens"], out)
  assert "key tokens shared" not in (out / "report.md").read_text()
  assert not (out / "key_tokens_k.png").exists()
