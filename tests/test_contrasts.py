"""Settings against each other: paired contrasts and their place in the report."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cdc_jax import report as report_cli
from cdc_jax.coalitions import contrasts, examples, results
from cdc_jax.coalitions.examples import ExampleOutcome
from cdc_jax.coalitions.incentives import Setting
from cdc_jax.coalitions.results import RunResult

N = 100


def _run(fmt: str, seed: int, correct: np.ndarray, *, members=("a",), eps=None, selection=None):
  run = (f"{'_'.join(members)}.L3.{fmt}.s{seed}" + (f".eps{eps}" if eps else "")
         + (f".{selection}" if selection else ""))
  outcomes = [ExampleOutcome(c, f"{c}-{i:03d}", bool(correct[i]), answer="x", chance=0.2)
              for c in members for i in range(N)]
  row = RunResult(run=run, members=members, level=3, format=fmt, seed=seed,
                  accuracy={c: float(np.mean(correct)) for c in members},
                  num_examples={c: N for c in members}, train_examples={c: 10 for c in members},
                  steps=10, wall_s=1.0, eps=eps, selection=selection)
  return row, outcomes


def _two_formats(flips: int = 20):
  """cot_label right on the first 40 examples; label_cot also on the next ``flips`` (2 seeds)."""
  base = np.arange(N) < 40
  better = np.arange(N) < 40 + flips
  rows, outcomes = [], {}
  for seed in (0, 1):
    for fmt, correct in (("cot_label", base), ("label_cot", better)):
      row, lines = _run(fmt, seed, correct)
      rows.append(row)
      outcomes[row.run] = lines
  return rows, outcomes


def test_contrast_is_the_paired_difference_and_knows_a_shift_from_noise():
  rows, outcomes = _two_formats(flips=20)
  (c,) = contrasts.contrast_settings(rows, outcomes, resamples=1000)
  assert (c.setting, c.reference) == (Setting(3, "label_cot"), Setting(3, "cot_label"))
  assert c.accuracy.value == pytest.approx(0.6)
  assert c.reference_accuracy.value == pytest.approx(0.4)
  assert c.difference.value == pytest.approx(0.2)
  # Paired: 20 examples flip 0 -> 1 and none flips back, so every resample's difference is the
  # share of flipped examples drawn (mean 0.2, sd sqrt(0.2 * 0.8 / 100) = 0.04) and never 0,
  # while each accuracy alone varies about +/-0.1.
  assert 0.1 < c.difference.low < 0.2 < c.difference.high < 0.3
  assert c.difference.excludes_zero
  assert c.difference.high - c.difference.low < c.accuracy.high - c.accuracy.low
  assert (c.seeds, c.reference_seeds, c.num_examples) == (2, 2, N)
  (same,) = contrasts.contrast_settings(*_two_formats(flips=0), resamples=200)
  assert (same.difference.value, same.difference.low, same.difference.high) == (0.0, 0.0, 0.0)


def test_pairs_choose_the_reference_and_the_default_is_every_pair_in_setting_order():
  rows, outcomes = _two_formats()
  for seed in (0, 1):
    row, lines = _run("permuted_cot", seed, np.arange(N) < 50)
    rows.append(row)
    outcomes[row.run] = lines
  every = contrasts.contrast_settings(rows, outcomes, resamples=50)
  assert [(str(c.setting), str(c.reference)) for c in every] == [
      ("L3 label_cot", "L3 cot_label"), ("L3 permuted_cot", "L3 cot_label"),
      ("L3 permuted_cot", "L3 label_cot")]
  (chosen,) = contrasts.contrast_settings(
      rows, outcomes, pairs=[(Setting(3, "permuted_cot"), Setting(3, "label_cot"))], resamples=50)
  assert chosen.difference.value == pytest.approx(-0.1)
  # A pair whose settings share no coalition gives nothing.
  assert contrasts.contrast_settings(
      rows, outcomes, pairs=[(Setting(3, "permuted_cot"), Setting(1, "cot_label"))]) == []


def test_contrasts_cover_every_member_of_a_coalition_run_in_both_settings():
  rows, outcomes = [], {}
  for eps in (None, 20.0):
    row, lines = _run("cot_label", 0, np.arange(N) < (60 if eps is None else 45),
                      members=("a", "b"), eps=eps)
    rows.append(row)
    outcomes[row.run] = lines
  got = contrasts.contrast_settings(rows, outcomes, resamples=50)
  assert [(c.community, str(c.setting), str(c.reference)) for c in got] == [
      ("a", "L3 cot_label eps=20.0", "L3 cot_label"), ("b", "L3 cot_label eps=20.0", "L3 cot_label")]
  assert all(c.difference.value == pytest.approx(-0.15) for c in got)


def test_report_privacy_table_has_intervals_and_the_difference_from_no_privacy(tmp_path):
  sweep = tmp_path / "sweep"
  for eps, right in ((None, 60), (20.0, 45)):
    for seed in (0, 1):
      row, lines = _run("cot_label", seed, np.arange(N) < right, eps=eps)
      results.write_result(sweep / row.run, row)
      examples.write_examples(sweep / row.run / results.EXAMPLES_FILENAME, lines)
  assert report_cli.main([str(sweep), "--resamples", "200"]) == 0
  section = (sweep / "report.md").read_text().split("## Privacy\n", 1)[1]
  assert "| accuracy | minus without privacy |" in section
  assert "| L3 cot_label | {a} | 20.0 | 2 | a: 0.450 [0." in section
  assert "| a: -0.150 [-0." in section


def test_random_draws_pool_into_one_setting_against_the_policy():
  policy = "learnability_gap:tokens=100"
  rows, outcomes = [], {}
  # The policy is right on 50 examples; random draw 0 on 30 and draw 1 on 40, each seed.
  for selection, right in ((policy, 50), (f"random:tokens_of={policy}:seed=0", 30),
                           (f"random:tokens_of={policy}:seed=1", 40)):
    for seed in (0, 1):
      row, lines = _run("cot_label", seed, np.arange(N) < right, selection=selection)
      rows.append(row)
      outcomes[row.run] = lines
  (c,) = contrasts.contrast_settings(rows, outcomes, resamples=200)
  assert c.setting.selection == f"random:tokens_of={policy}"  # Sorted after the policy.
  assert c.reference.selection == policy
  assert (c.seeds, c.reference_seeds) == (4, 2)  # 2 draws x 2 training seeds against 2 seeds.
  assert c.accuracy.value == pytest.approx(0.35)
  assert c.difference.value == pytest.approx(-0.15)
  assert contrasts.pooled_setting(Setting(3, "cot_label", None, policy)).selection == policy


def test_settings_evaluated_on_other_examples_cannot_be_paired():
  rows, outcomes = _two_formats()
  run = rows[1].run  # label_cot seed 0
  outcomes[run] = [dataclasses.replace(o, id=o.id.replace("a-", "z-")) for o in outcomes[run]]
  with pytest.raises(ValueError, match=rf"run {run} on a: lacks example ids"):
    contrasts.contrast_settings(rows, outcomes, resamples=10)
  del outcomes[run]
  with pytest.raises(ValueError, match=f"runs without per-example outcomes: {run}"):
    contrasts.contrast_settings(rows, outcomes, resamples=10)


def test_report_has_a_settings_compared_section(tmp_path, capsys):
  rows, outcomes = _two_formats()
  sweep = tmp_path / "sweep"
  for row in rows:
    results.write_result(sweep / row.run, row)
    examples.write_examples(sweep / row.run / results.EXAMPLES_FILENAME, outcomes[row.run])
  assert report_cli.main([str(sweep), "--resamples", "200"]) == 0
  text = (sweep / "report.md").read_text()
  section = text.split("## Settings compared", 1)[1]
  assert "| a | {a} | L3 label_cot | L3 cot_label | 0.600 [" in section
  assert "| +0.200 [+0." in section and "| 2 vs 2 | 100 |" in section
  assert "a in {a}: L3 label_cot - L3 cot_label = +0.200 [+0." in capsys.readouterr().out


def test_report_with_another_sweep_compares_settings_across_them(tmp_path, capsys):
  rows, outcomes = _two_formats()
  main, other = tmp_path / "main", tmp_path / "claim"
  for row in rows:  # cot_label runs in one sweep, label_cot runs in another.
    sweep = main if row.format == "cot_label" else other
    results.write_result(sweep / row.run, row)
    examples.write_examples(sweep / row.run / results.EXAMPLES_FILENAME, outcomes[row.run])
  out = tmp_path / "both"
  assert report_cli.main([str(main), "--with", str(other), "--out", str(out),
                          "--resamples", "100"]) == 0
  printed = capsys.readouterr().out
  assert f"read 4 runs (2 settings) from {main} and {other}" in printed
  assert "L3 label_cot - L3 cot_label = +0.200" in printed
  assert "| a | {a} | L3 label_cot | L3 cot_label |" in (out / "report.md").read_text()
  assert not (main / "report.md").exists()
  results.write_result(other / rows[0].run, rows[0])  # The same run in both: refused.
  with pytest.raises(ValueError, match=f"run '{rows[0].run}' is in both {main} and {other}"):
    report_cli.main([str(main), "--with", str(other), "--out", str(out)])


def test_settings_sort_numbers_in_their_selection_by_value():
  from cdc_jax.coalitions import incentives

  names = ["key_tokens:k=16", "key_tokens:k=4", None, "key_tokens:k=8",
           "random:tokens_of=learnability_gap:tokens=900:seed=10",
           "random:tokens_of=learnability_gap:tokens=900:seed=2"]
  ordered = sorted((Setting(3, "key_tokens", selection=n) for n in names),
                   key=incentives.setting_sort_key)
  assert [s.selection for s in ordered] == [
      None, "key_tokens:k=4", "key_tokens:k=8", "key_tokens:k=16",
      "random:tokens_of=learnability_gap:tokens=900:seed=2",
      "random:tokens_of=learnability_gap:tokens=900:seed=10"]


def test_k_and_privacy_figures_carry_the_intervals_of_their_points(tmp_path):
  from cdc_jax.coalitions import analysis, figures, incentives

  rows, outcomes = [], {}
  for seed in (0, 1):
    for k, right in ((4, 30), (8, 50)):
      row, lines = _run("key_tokens", seed, np.arange(N) < right)
      row = dataclasses.replace(row, run=f"{row.run}.k{k}", selection=f"key_tokens:k={k}")
      rows.append(row)
      outcomes[row.run] = lines
    for eps, right in ((None, 60), (20.0, 45)):
      row, lines = _run("cot_label", seed, np.arange(N) < right, eps=eps)
      rows.append(row)
      outcomes[row.run] = lines
  analyses = analysis.analyse(rows, outcomes, resamples=200)
  (curve,) = figures.k_curves(rows, analyses).values()
  assert sorted(curve) == [4, 8]
  for k, (value, interval) in curve.items():
    assert value == pytest.approx({4: 0.3, 8: 0.5}[k]) == pytest.approx(interval.value)
    assert interval.low < value < interval.high
  (plain,) = figures.k_curves(rows).values()  # Without analyses: the points alone.
  assert all(interval is None for _, interval in plain.values())
  assert figures.plot_accuracy_vs_k(rows, tmp_path / "k.png", analyses=analyses).exists()
  averages = incentives.average_over_seeds(rows)
  assert figures.plot_privacy(averages, tmp_path / "eps.png", analyses=analyses).exists()
