"""Sweeps: the grid, dry runs, running, skipping finished runs, reporting failures."""

import json

import pytest

from cdc_jax import provenance
from cdc_jax.coalitions import examples, experiment, results, sweep
from tests import train_helpers


def test_grid_covers_every_coalition_level_format_and_proportion():
  spec = sweep.SweepSpec(communities=("b", "a", "c"), levels=(1, 6), formats=("cot_label",
                                                                             "label_only"),
                         seeds=(0, 1), pair_proportions=(0.25, 0.75))
  runs = spec.runs()
  # 7 coalitions + 2 extra proportions for each of the 3 pairs, per level x format x seed.
  assert len(runs) == (7 + 3 * 2) * 2 * 2 * 2
  assert len({r.run_id for r in runs}) == len(runs)
  pairs = [r for r in runs if r.members == ("a", "b") and r.proportions and r.level == 1
           and r.fmt == "label_only" and r.seed == 0]
  assert [r.proportions for r in pairs] == [{"a": 0.25, "b": 0.75}, {"a": 0.75, "b": 0.25}]
  assert pairs[0].run_id == "a_b_p25_75.L1.label_only.s0"
  only_pairs = sweep.SweepSpec(communities=("a", "b", "c"), coalition_sizes=(2,))
  assert [r.members for r in only_pairs.runs()] == [("a", "b"), ("a", "c"), ("b", "c")]
  with pytest.raises(ValueError, match="outside the sweep"):
    sweep.SweepSpec(communities=("a",), coalitions=(("a", "z"),)).runs()


def test_dry_run_prepares_run_dirs_and_prints_one_command_each(tmp_path, capsys):
  spec = sweep.SweepSpec(communities=("strategy", "trivia"), levels=(6,))
  assert sweep.run_sweep(spec=spec, sweep_dir=str(tmp_path), gin_files=["x.gin"],
                         gin_bindings=["TRAIN_STEPS = 3"], dry_run=True) == []
  commands = [l for l in capsys.readouterr().out.splitlines() if "cdc_jax.coalitions.experiment" in l]
  assert len(commands) == 3
  assert (tmp_path / "commands.txt").read_text().splitlines() == commands
  config = json.loads((tmp_path / "strategy_trivia.L6.cot_label.s0" / "run.json").read_text())
  assert config["spec"]["members"] == ["strategy", "trivia"]
  assert config["gin_bindings"] == ["TRAIN_STEPS = 3"]


def test_sweep_runs_skips_finished_and_reports_failures(tmp_path, capsys):
  data = tmp_path / "data"
  manifest = train_helpers.always_yes_community(data, "yesland")
  bindings = ["TRAIN_STEPS = 4", "BATCH_SIZE = 4", "CHECKPOINT_EVERY = 4",
              "TASK_FEATURE_LENGTHS = {'inputs': 16, 'targets': 16}", "EVAL_BATCH_SIZE = 8",
              f"COMMUNITIES = ['{manifest}']"]
  # steps_per_member overrides the gin TRAIN_STEPS of every run (here 2 steps a member).
  spec = sweep.SweepSpec(communities=("yesland", "nowhere"), coalitions=(("yesland",), ("nowhere",)),
                         levels=(6,), formats=("label_only",), steps_per_member=2)
  with pytest.raises(RuntimeError, match=r"1 run\(s\) failed: \['nowhere.L6.label_only.s0'\]"):
    sweep.run_sweep(spec=spec, sweep_dir=str(tmp_path / "sweep"),
                    gin_files=["gin/experiments/coalition_tiny.gin"], gin_bindings=bindings,
                    workers=2)
  err = capsys.readouterr().err
  assert "nowhere.L6.label_only.s0 failed; last lines of" in err and "nowhere" in err
  rows = results.read_results(tmp_path / "sweep" / results.TABLE_FILENAME)
  assert [r.run for r in rows] == ["yesland.L6.label_only.s0"]
  assert rows[0].steps == 2 and rows[0].num_examples == {"yesland": 8}
  assert 0.0 <= rows[0].accuracy["yesland"] <= 1.0
  assert "acc_yesland" in (tmp_path / "sweep" / "results.csv").read_text().splitlines()[0]
  # Each run records the commit and machine it ran on.
  attempts = provenance.read(tmp_path / "sweep" / "yesland.L6.label_only.s0")
  assert len(attempts) == 1
  assert attempts[0]["commit"] == provenance.code_version()["commit"]
  assert attempts[0]["cpu"] == provenance.cpu_model()
  # Per-example outcomes, next to result.json and gathered for the sweep.
  run_examples = examples.read_examples(
      tmp_path / "sweep" / "yesland.L6.label_only.s0" / results.EXAMPLES_FILENAME)[None]
  assert sorted(o.id for o in run_examples) == [f"test{100 + i}" for i in range(8)]
  assert sum(o.correct for o in run_examples) / 8 == rows[0].accuracy["yesland"]
  # Every answer is 'yes': the majority class is always right; no teacher answers recorded.
  assert all(o.majority_correct and o.teacher_correct is None and o.chance == 0.5
             for o in run_examples)
  assert examples.read_examples(tmp_path / "sweep" / results.EXAMPLES_FILENAME) == {
      "yesland.L6.label_only.s0": run_examples}
  # Re-running skips the finished run and retries only the failed one; the zero-shot
  # baseline (0 steps) is evaluated like any other run.
  ok = sweep.SweepSpec(communities=("yesland",), levels=(6,), formats=("label_only",),
                       zero_shot=True)
  log = tmp_path / "sweep" / "yesland.L6.label_only.s0" / "log.txt"
  before = log.read_text()
  rows = sweep.run_sweep(spec=ok, sweep_dir=str(tmp_path / "sweep"),
                         gin_files=["gin/experiments/coalition_tiny.gin"], gin_bindings=bindings)
  assert log.read_text() == before
  assert "2 runs, 1 done, 1 to run" in capsys.readouterr().out
  zero = next(r for r in rows if r.baseline == "zero_shot")
  assert zero.run == "zero_shot.yesland.L6.label_only.s0" and zero.steps == 0
  assert zero.train_examples == {"yesland": 0}


def test_coalition_spec_normalises_and_names_runs():
  spec = experiment.CoalitionSpec(members=("trivia", "strategy"), level=3, fmt="step_by_step",
                                  proportions={"trivia": 3, "strategy": 1})
  assert spec.members == ("strategy", "trivia")
  assert spec.proportions == {"strategy": 0.25, "trivia": 0.75}
  assert spec.run_id == "strategy_trivia_p25_75.L3.step_by_step.s0"
  assert experiment.CoalitionSpec.from_json(spec.to_json()) == spec
  assert experiment.eval_task("trivia", 3, "step_by_step") == "cdc.trivia.L3.step_by_step:predict"
  with pytest.raises(ValueError, match="must name exactly"):
    experiment.CoalitionSpec(members=("a", "b"), level=1, fmt="cot_label", proportions={"a": 1})


def test_steps_per_member_gives_every_member_the_same_steps():
  spec = sweep.SweepSpec(communities=("a", "b", "c"), levels=(1,), steps_per_member=5,
                         zero_shot=True)
  steps = {r.run_id: r.train_steps for r in spec.runs()}
  assert steps["a.L1.cot_label.s0"] == 5 and steps["a_b.L1.cot_label.s0"] == 10
  assert steps["a_b_c.L1.cot_label.s0"] == 15 and steps["zero_shot.a_b_c.L1.cot_label.s0"] is None
  assert all(r.train_steps is None for r in sweep.SweepSpec(communities=("a", "b")).runs())
  with pytest.raises(ValueError, match="train_steps must be a positive int"):
    sweep.SweepSpec(communities=("a",), steps_per_member=0).runs()


def test_zero_shot_adds_one_untrained_student_per_format_first():
  # The prompt does not depend on the level: level 6 adds a zero-shot run only for b, which has
  # no level 1; a second format gets its own.
  spec = sweep.SweepSpec(communities=("a", "b"), levels=(1, 6), seeds=(0, 1), zero_shot=True,
                         community_levels={"a": [1, 6], "b": [6]})
  zero = [r for r in spec.runs() if r.baseline]
  assert [(r.members, r.level, r.seed) for r in zero] == [(("a",), 1, 0), (("b",), 6, 0)]
  both = sweep.SweepSpec(communities=("a", "b"), levels=(1, 3), formats=("cot_label", "label_cot"),
                         zero_shot=True)
  assert [(r.members, r.level, r.fmt) for r in both.runs() if r.baseline] == [
      (("a", "b"), 1, "cot_label"), (("a", "b"), 1, "label_cot")]
  assert spec.runs()[:2] == zero  # Baselines first: a sweep run in pieces has them early.
  assert zero[0].run_id == "zero_shot.a.L1.cot_label.s0"
  assert len(spec.runs()) - len(zero) == len(sweep.SweepSpec(
      communities=("a", "b"), levels=(1, 6), seeds=(0, 1),
      community_levels={"a": [1, 6], "b": [6]}).runs())
