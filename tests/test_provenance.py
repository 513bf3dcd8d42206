"""Tests of cdc_jax.provenance: the commit and machine each run records, and the report's line."""

from __future__ import annotations

import json
import subprocess

import pytest

from cdc_jax import io as io_lib
from cdc_jax import provenance
from cdc_jax import report as report_cli
from cdc_jax.coalitions import results
from tests import test_report

def _git(cwd, *args):
  return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                        cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_code_version_is_the_checkout_head_and_sees_local_changes(tmp_path):
  repo = tmp_path / "repo"
  repo.mkdir()
  _git(repo, "init", "-q")
  (repo / "a.txt").write_text("one\n")
  _git(repo, "add", "a.txt")
  _git(repo, "commit", "-q", "-m", "first")
  head = _git(repo, "rev-parse", "HEAD")

  assert provenance.code_version(repo) == {"commit": head, "dirty": False}
  (repo / "untracked.txt").write_text("not code\n")  # Untracked files (run outputs) are not code.
  assert provenance.code_version(repo)["dirty"] is False
  (repo / "a.txt").write_text("two\n")
  assert provenance.code_version(repo) == {"commit": head, "dirty": True}


def test_outside_a_checkout_the_commit_is_unknown(tmp_path):
  assert provenance.code_version(tmp_path) == {"commit": None, "dirty": None}


def test_attempts_append_and_bad_files_name_themselves(tmp_path):
  first = provenance.describe()
  assert first["cpu"] and first["cpus"] >= 1 and first["jax"] and first["devices"]
  provenance.record_attempt(tmp_path, first)
  provenance.record_attempt(tmp_path, {**first, "commit": "f" * 40})
  attempts = provenance.read(tmp_path)
  assert [a["commit"] for a in attempts] == [first["commit"], "f" * 40]

  (tmp_path / provenance.FILENAME).write_text("{not json")
  with pytest.raises(io_lib.SchemaError, match=str(tmp_path / provenance.FILENAME)):
    provenance.read(tmp_path)
  (tmp_path / provenance.FILENAME).write_text(json.dumps({"commit": "x"}))
  with pytest.raises(io_lib.SchemaError, match="expected a JSON list"):
    provenance.read(tmp_path)


def test_report_lists_the_commits_and_cpus_of_its_runs(tmp_path, capsys):
  sweep = tmp_path / "sweep"
  rows = [r for r in test_report.synthetic_sweep()
          if r.level == 6 and r.format == "cot_label" and r.eps is None and r.proportions is None]
  for row in rows:
    results.write_result(sweep / row.run, row)
  entry = {"commit": "a" * 40, "dirty": False, "cpu": "Test CPU"}
  for row in rows[:-1]:
    provenance.record_attempt(sweep / row.run, entry)
  # A run resumed at another commit with local changes counts under both.
  provenance.record_attempt(sweep / rows[0].run, {**entry, "commit": "b" * 40, "dirty": True})

  assert report_cli.main([str(sweep)]) == 0

  text = (sweep / "report.md").read_text()
  assert (f"Provenance ({len(rows) - 1} of {len(rows)} runs record it; 1 ran before runs recorded "
          "it; a resumed run counts under each attempt's value): commits aaaaaaa "
          f"({len(rows) - 1} runs), bbbbbbb with local changes (1 run); CPUs Test CPU "
          f"({len(rows) - 1} runs).") in text
  assert "Provenance (" in capsys.readouterr().out
