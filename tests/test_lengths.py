"""The length audit: token lengths of tasks, examples cut, percentile lengths, the stats CLI."""

import doctest
import json
import logging

import numpy as np
import pytest

from cdc_jax.tasks import stats
from cdc_jax.tasks import catalog
from cdc_jax.tasks import lengths as lengths_lib
from tests import train_helpers

TASK = "cdc.lengthland.L6.cot_label"


@pytest.fixture(scope="module")
def lengthland(tmp_path_factory):
  manifest = train_helpers.always_yes_community(tmp_path_factory.mktemp("data"), "lengthland",
                                                train=12, test=4)
  catalog.register_tasks(embedded=False, communities=[manifest])
  return manifest


def _expected(split_records, text_fn):
  """Token lengths computed here: the process vocabulary's pieces plus EOS."""
  vocab = catalog.process_vocabulary()
  return np.array([len(vocab.encode(text_fn(r))) + 1 for r in split_records])


def test_doctests():
  assert doctest.testmod(lengths_lib).failed == 0


def test_token_lengths_are_the_models_untrimmed_lengths(lengthland):
  from cdc_jax.data import records
  train = records.load_community(lengthland).records["train"]
  measured = lengths_lib.token_lengths(TASK, "train")
  np.testing.assert_array_equal(measured.inputs, _expected(train, lambda r: r.question))
  np.testing.assert_array_equal(measured.targets, _expected(
      train, lambda r: f"{r.rationales[6]} So the answer is yes."))


def test_audit_counts_cuts_warns_and_writes_lengths_json(lengthland, tmp_path, caplog):
  measured = lengths_lib.token_lengths(TASK, "train")
  short = int(np.median(measured.inputs))
  expected_inputs = int(np.sum(measured.inputs > short))
  assert 0 < expected_inputs < len(measured.inputs)
  with caplog.at_level(logging.INFO):
    resolved = lengths_lib.audit_feature_lengths(
        TASK, {"inputs": short, "targets": "p100"}, split="train", out_dir=tmp_path)
  assert resolved == {"inputs": short, "targets": int(measured.targets.max())}
  warning, = [r for r in caplog.records if r.levelno == logging.WARNING]
  assert (f"{expected_inputs} of 12 examples have inputs cut, 0 targets cut"
          in warning.getMessage())
  assert TASK in warning.getMessage()
  written = json.loads((tmp_path / "lengths.json").read_text())
  assert written["requested"] == {"inputs": short, "targets": "p100"}
  assert written["task_feature_lengths"] == resolved
  assert (written["examples"], written["inputs_cut"], written["targets_cut"]) == (
      12, expected_inputs, 0)
  assert written["tasks"][TASK]["inputs_max"] == int(measured.inputs.max())
  caplog.clear()
  with caplog.at_level(logging.INFO):
    lengths_lib.audit_feature_lengths(TASK, {"inputs": "p100", "targets": "p100"}, split="test")
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_percentile_lengths_and_bad_lengths():
  assert lengths_lib.percentile_length(np.array([3, 1, 2, 10]), "p50") == 2
  assert lengths_lib.percentile_length(np.array([3, 1, 2, 10]), "P100") == 10
  assert lengths_lib.percentile_length(np.array([3, 1, 2, 10]), "p90") == 10
  for bad in ("95", "p0", "p101", "max"):
    with pytest.raises(ValueError, match="expected a number of tokens or a percentile"):
      lengths_lib.percentile_length(np.array([1]), bad)
  with pytest.raises(ValueError, match=r"task_feature_lengths\['inputs'\] = 0"):
    lengths_lib.resolve_feature_lengths(TASK, {"inputs": 0}, split="train")


def test_stats_cli_prints_percentiles_per_split_level_and_format(lengthland, capsys):
  assert stats.main([str(lengthland), "--levels=6", "--formats=label_only,step_by_step",
                     "--lengths=4,3"]) == 0
  out = capsys.readouterr().out
  rows = {line.split()[1]: line.split() for line in out.splitlines()
          if line.startswith(("train ", "test "))}
  assert set(rows) == {"cdc.lengthland.L6.label_only", "cdc.lengthland.L6.step_by_step:predict",
                       "cdc.lengthland.L6.step_by_step:explain"}
  assert sum(line.startswith("train ") for line in out.splitlines()) == 3
  assert sum(line.startswith("test ") for line in out.splitlines()) == 3
  measured = lengths_lib.token_lengths("cdc.lengthland.L6.label_only", "test")
  cells = rows["cdc.lengthland.L6.label_only"]  # The last test row of that task.
  # split task n | p50 p90 p95 p99 max | p50 p90 p95 p99 max | inputs_cut targets_cut
  assert cells[2] == "4"
  assert int(cells[8]) == measured.inputs.max()
  assert cells[-2:] == [str(int(np.sum(measured.inputs > 4))), str(int(np.sum(
      measured.targets > 3)))]
  assert "== lengthland: 16 records, levels [6], 6 task splits measured ==" in out
  assert stats.main([str(lengthland.parent / "absent.json")]) == 1
  assert "absent.json" in capsys.readouterr().err
