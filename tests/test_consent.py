"""Consent: training manifests, the registry, audits, and withdrawal from a sweep."""

import ast
import json

import pytest

from cdc_jax import audit as audit_cli
from cdc_jax import withdraw as withdraw_cli
from cdc_jax.contribution import consent, sweep_usage, training_manifest, withdraw
from cdc_jax.coalitions import experiment, results
from cdc_jax.data import records as R
from cdc_jax.tasks import catalog, registry

BINDINGS = ["TRAIN_STEPS = 2", "BATCH_SIZE = 4", "CHECKPOINT_EVERY = 2", "EVAL_BATCH_SIZE = 2",
            "TASK_FEATURE_LENGTHS = {'inputs': 16, 'targets': 8}"]


def _community(directory, name, *, train=6, provenance=None):
  """Yes-questions; train record 5 lacks the level-6 rationale."""
  def rec(i, split):
    return R.TraceRecord(id=f"{split}{i}", community=name, split=split,
                         question=f"Is {i} a {name} number?", answer="yes", answer_type="boolean",
                         rationales={6: f"{i} is a number."} if i != 5 else {1: "It is."},
                         teacher="oracle",
                         provenance={"source": "test", "license": "CC0", **(provenance or {})})
  manifest = R.CommunityManifest(name=name, description=name, answer_type="boolean",
                                 splits={"train": "train.jsonl", "test": "test.jsonl"},
                                 license="CC0")
  return R.write_community(directory / name, manifest,
                           {"train": [rec(i, "train") for i in range(train)],
                            "test": [rec(100 + i, "test") for i in range(2)]})


@pytest.fixture(scope="module")
def communities(tmp_path_factory):
  root = tmp_path_factory.mktemp("consent_data")
  manifests = {
      "alpha": _community(root, "alpha"),
      "beta": _community(root, "beta", provenance={
          "privacy": {"eps": 8.0, "mechanism": "exponential"},
          "selection": {"policy": "random", "budget": 6, "of": 9}}),
      "gamma": _community(root, "gamma"),
  }
  catalog.register_tasks(embedded=False, communities=list(manifests.values()))
  return manifests


def test_consent_registry_round_trip(tmp_path):
  path = tmp_path / "consent.json"
  assert consent.read_consents(path).communities == {}
  consent.withdraw("alpha", records=["train1", "train2"], path=path, now="2025-01-01T00:00:00Z")
  consent.withdraw("alpha", records=["train2", "train3"], path=path, now="2025-02-01T00:00:00Z",
                   reason="asked")
  got = consent.read_consents(path).of("alpha")
  assert got.records == {"train1": "2025-01-01T00:00:00Z", "train2": "2025-01-01T00:00:00Z",
                         "train3": "2025-02-01T00:00:00Z"}
  assert got.withdrawn_at is None and got.reason == "asked"
  assert got.withdrawn("train3") == "2025-02-01T00:00:00Z" and got.withdrawn("train4") is None
  consent.withdraw("beta", path=path, now="2025-03-01T00:00:00Z")
  assert consent.read_consents(path).of("beta").withdrawn("anything") == "2025-03-01T00:00:00Z"
  assert json.loads(path.read_text())["communities"]["beta"]["withdrawn_at"] == \
      "2025-03-01T00:00:00Z"
  path.write_text("{not json")
  with pytest.raises(ValueError, match=r"consent.json:1: invalid JSON"):
    consent.read_consents(path)
  with pytest.raises(ValueError, match="names no record"):
    consent.withdraw("alpha", records=[], path=tmp_path / "other.json")


def test_training_manifest_lists_records_levels_formats_eps_selection(communities, tmp_path):
  mixture = registry.register_coalition("alpha_beta", ["alpha", "beta"], level=6, fmt="cot_label")
  manifest = training_manifest.training_manifest(mixture)
  assert manifest["tasks"] == ["cdc.alpha.L6.cot_label", "cdc.beta.L6.cot_label"]
  alpha = manifest["communities"]["alpha"]
  data = R.load_community(communities["alpha"])
  # Record 5 has no level-6 rationale: cot_label training skips it.
  assert alpha["num_records"] == 5 and alpha["records"] == {
      r.id: training_manifest.record_hash(r) for r in data.records["train"] if 6 in r.rationales}
  assert (alpha["levels"], alpha["formats"], alpha["eps"]) == ([6], ["cot_label"], [])
  beta = manifest["communities"]["beta"]
  assert beta["eps"] == [8.0] and beta["privacy"] == [{"eps": 8.0, "mechanism": "exponential"}]
  assert beta["selection"] == [{"policy": "random", "budget": 6, "of": 9}]
  assert manifest["eps"] == [8.0]
  assert {"alpha", "beta", "gamma"} <= set(manifest["vocabulary"]["communities"])
  assert training_manifest.training_manifest("cdc.gamma.L6.label_only")["communities"]["gamma"][
      "num_records"] == 6  # label_only needs no rationale
  # Written once; an unchanged rewrite keeps the file, a changed one keeps the old as previous.
  path = training_manifest.write_training_manifest(tmp_path, mixture,
                                                   registry_path=tmp_path / "none.json")
  text = path.read_text()
  assert training_manifest.write_training_manifest(
      tmp_path, mixture, registry_path=tmp_path / "none.json").read_text() == text
  old = json.loads(text)
  old["communities"]["alpha"]["records"]["train9"] = "abc"
  path.write_text(json.dumps(old))
  training_manifest.write_training_manifest(tmp_path, mixture,
                                            registry_path=tmp_path / "none.json")
  assert json.loads(path.read_text())["previous"][0]["communities"]["alpha"]["records"][
      "train9"] == "abc"
  violations = consent.check_manifest(json.loads(path.read_text()), consent.Consents(
      {"alpha": consent.CommunityConsent(records={"train9": "t"})}))
  assert [(v.community, v.record_ids) for v in violations] == [("alpha", ("train9",))]


def test_training_refuses_withdrawn_data_and_audit_names_it(communities, tmp_path, capsys):
  registry_path = tmp_path / "consent.json"
  model_dir = tmp_path / "model"
  training_manifest.write_training_manifest(model_dir, "cdc.alpha.L6.cot_label",
                                            registry_path=registry_path)
  assert audit_cli.main([str(model_dir / "checkpoints"), "--consent", str(registry_path)]) == 0
  assert "AUDIT OK" in capsys.readouterr().out
  consent.withdraw("alpha", records=["train2", "train5", "train0"], path=registry_path,
                   now="2025-01-01T00:00:00Z")
  with pytest.raises(consent.ConsentError, match=r"'alpha' withdrew records .* 2 withdrawn "
                     r"record\(s\) used: train0, train2$"):
    training_manifest.write_training_manifest(tmp_path / "new", "cdc.alpha.L6.cot_label",
                                              registry_path=registry_path)
  assert audit_cli.main([str(model_dir), "--consent", str(registry_path)]) == 1
  err = capsys.readouterr().err
  assert "AUDIT FAILED" in err and "train0, train2" in err and "train5" not in err
  assert audit_cli.main([str(tmp_path / "nothing"), "--consent", str(registry_path)]) == 2
  assert "AUDIT IMPOSSIBLE" in capsys.readouterr().err


def _finished_run(sweep_dir, members, communities, *, accuracy=0.5):
  """A run directory as a finished sweep leaves it: run.json, training manifest, result."""
  spec = experiment.CoalitionSpec(members=tuple(members), level=6, fmt="label_only")
  run_dir = sweep_dir / spec.run_id
  bindings = BINDINGS + [f"COMMUNITIES = {[str(m) for m in communities.values()]!r}",
                         "catalog.register_tasks.embedded = False"]
  experiment.write_run_config(run_dir, spec, gin_files=["gin/experiments/coalition_tiny.gin"],
                              gin_bindings=bindings)
  training_manifest.write_training_manifest(run_dir / "model", experiment.register_mixture(spec),
                                            registry_path=sweep_dir / "no_consents.json")
  results.write_result(run_dir, _result(spec, accuracy))
  return run_dir


def _result(spec, accuracy):
  return results.RunResult(run=spec.run_id, members=spec.members, level=6, format="label_only",
                           seed=0, accuracy={m: accuracy for m in spec.members},
                           num_examples={m: 2 for m in spec.members},
                           train_examples={m: 6 for m in spec.members}, steps=2, wall_s=1.0)


def _fake_run(calls):
  def run(run_dir):
    calls.append(run_dir)
    spec = experiment.CoalitionSpec.from_json(json.loads((run_dir / "run.json").read_text())["spec"])
    results.write_result(run_dir, _result(spec, 0.9))
    return 0
  return run


def test_withdraw_marks_stale_and_reruns_without_the_community(communities, tmp_path):
  sweep_dir = tmp_path / "sweep"
  for members in (["alpha"], ["beta"], ["alpha", "beta"], ["beta", "gamma"]):
    _finished_run(sweep_dir, members, communities)
  calls = []
  report = withdraw.withdraw_from_sweep(sweep_dir, "beta", consent_path=tmp_path / "c.json",
                                        reason="left", run_fn=_fake_run(calls))
  stale = sorted(a.run_dir.name for a in report.affected)
  assert stale == ["alpha_beta.L6.label_only.s0", "beta.L6.label_only.s0",
                   "beta_gamma.L6.label_only.s0"]
  assert [p.name for p in report.withdrawn_only] == ["beta.L6.label_only.s0"]
  assert [p.name for p in report.reused] == ["alpha.L6.label_only.s0"]  # alpha_beta minus beta
  assert calls == [sweep_dir / "gamma.L6.label_only.s0"] and report.failed == ()
  for name in stale:
    assert not (sweep_dir / name / "result.json").exists()
    assert (sweep_dir / name / "result.stale.json").exists()
  note = json.loads((sweep_dir / "beta_gamma.L6.label_only.s0" / "STALE.json").read_text())
  assert note["replaced_by"] == "gamma.L6.label_only.s0" and note["reason"] == "left"
  assert "trained on 6 withdrawn record(s) of beta" in note["why"]
  config = json.loads((sweep_dir / "gamma.L6.label_only.s0" / "run.json").read_text())
  assert config["spec"]["members"] == ["gamma"]
  assert config["gin_bindings"][:len(BINDINGS)] == BINDINGS
  assert "beta" not in config["gin_bindings"][-1] and "gamma" in config["gin_bindings"][-1]
  rows = results.read_results(sweep_dir / results.TABLE_FILENAME)
  assert [r.run for r in rows] == ["alpha.L6.label_only.s0", "gamma.L6.label_only.s0"]
  assert consent.read_consents(tmp_path / "c.json").of("beta").withdrawn_at is not None

  # Record-level: alpha withdraws one record; its run re-runs in place on a filtered copy.
  calls.clear()
  report = withdraw.withdraw_from_sweep(sweep_dir, "alpha", records=["train1"],
                                        consent_path=tmp_path / "c.json", run_fn=_fake_run(calls))
  assert [a.run_dir.name for a in report.affected] == ["alpha.L6.label_only.s0"]
  run_dir = sweep_dir / "alpha.L6.label_only.s0"
  assert calls == [run_dir] and (run_dir / "result.json").exists()
  archived = list(run_dir.glob("stale-*"))
  assert len(archived) == 1 and (archived[0] / "model" / "training_manifest.json").exists()
  bindings = json.loads((run_dir / "run.json").read_text())["gin_bindings"]
  filtered = [b for b in bindings if b.startswith("COMMUNITIES")][-1]
  assert ".consent/alpha-" in filtered
  copy = R.load_community(ast.literal_eval(filtered.split("=", 1)[1].strip())[0])
  assert [r.id for r in copy.records["train"]] == ["train0", "train2", "train3", "train4",
                                                   "train5"]


def test_withdraw_reruns_a_real_run_that_passes_the_audit(communities, tmp_path, capsys):
  sweep_dir = tmp_path / "sweep"
  stale_dir = _finished_run(sweep_dir, ["beta", "gamma"], communities)
  registry_path = tmp_path / "consent.json"
  assert withdraw_cli.main(["--community", "beta", "--sweep", str(sweep_dir), "--consent",
                            str(registry_path)]) == 0
  out = capsys.readouterr().out
  assert "withdrew community beta entirely" in out and "1 run(s) marked stale" in out
  assert "re-ran 1" in out
  run_dir = sweep_dir / "gamma.L6.label_only.s0"
  row = results.read_results(sweep_dir / results.TABLE_FILENAME)
  assert [r.run for r in row] == ["gamma.L6.label_only.s0"] and row[0].steps == 2
  manifest = training_manifest.read_training_manifest(run_dir / "model")
  assert sorted(manifest["communities"]) == ["gamma"]
  assert "beta" not in manifest["vocabulary"]["communities"]
  assert audit_cli.main([str(run_dir / "model"), "--consent", str(registry_path)]) == 0
  assert audit_cli.main([str(stale_dir / "model"), "--consent", str(registry_path)]) == 1
  assert "community 'beta' withdrew entirely" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# Hardening (issue 16): check before writing, true counts, undo recorded in the ledger.


def test_withdraw_checks_sweeps_community_and_records_before_writing(communities, tmp_path,
                                                                     capsys):
  sweep_dir = tmp_path / "sweep"
  run_dir = _finished_run(sweep_dir, ["alpha", "beta"], communities)
  registry_path = tmp_path / "consent.json"
  (tmp_path / "empty").mkdir()
  common = ["--consent", str(registry_path)]
  cases = [
      (["--community", "alpha", "--sweep", str(tmp_path / "typo")],
       f"sweep directory {tmp_path / 'typo'} does not exist"),
      (["--community", "alpha", "--sweep", str(sweep_dir), "--sweep", str(tmp_path / "typo")],
       "does not exist"),
      (["--community", "alpha", "--sweep", str(tmp_path / "empty")], "holds no sweep runs"),
      (["--community", "alpah", "--sweep", str(sweep_dir)],
       "community 'alpah' is not used by any run of"),
      (["--community", "alpah", "--sweep", str(sweep_dir)], "did you mean 'alpha'?"),
      (["--community", "alpha", "--sweep", str(sweep_dir), "--records", "train1,nope7,train2"],
       "1 record id(s) not in community 'alpha'"),
      (["--community", "alpha", "--sweep", str(sweep_dir), "--records", "test100,nope7"],
       ": nope7"),
      (["--community", "alpha", "--sweep", str(sweep_dir), "--records", ","],
       "--records names no record id"),
      (["--community", "alpha", "--sweep", str(sweep_dir), "--manifest",
        str(communities["beta"])], "is community 'beta', not 'alpha'"),
  ]
  for argv, message in cases:
    assert withdraw_cli.main(argv + common) == 2, argv
    err = capsys.readouterr().err
    assert message in err and "nothing was written" in err, (argv, err)
    assert not registry_path.exists()
    assert (run_dir / results.RESULT_FILENAME).exists() and not (run_dir / "STALE.json").exists()
  with pytest.raises(sweep_usage.WithdrawalError, match="does not exist"):
    withdraw.withdraw_from_sweep(tmp_path / "typo", "alpha", consent_path=registry_path,
                                 run_fn=_fake_run([]))
  assert not registry_path.exists()


def test_withdraw_counts_truly_and_undo_is_recorded_and_restores_runs(communities, tmp_path,
                                                                       capsys):
  sweep_dir = tmp_path / "sweep"
  pair = _finished_run(sweep_dir, ["alpha", "beta"], communities)
  _finished_run(sweep_dir, ["gamma"], communities)
  registry_path = tmp_path / "consent.json"
  common = ["--sweep", str(sweep_dir), "--consent", str(registry_path), "--no_rerun"]
  assert withdraw_cli.main(
      ["--community", "alpha", "--records", "train1,train1,train2"] + common) == 0
  out = capsys.readouterr().out
  assert "withdrew 2 record(s) of alpha\n" in out and "1 run(s) marked stale" in out
  assert withdraw_cli.main(["--community", "alpha", "--records", "train2,train3"] + common) == 0
  assert "withdrew 1 record(s) of alpha (1 already withdrawn)" in capsys.readouterr().out
  assert sorted(consent.read_consents(registry_path).of("alpha").records) == [
      "train1", "train2", "train3"]
  assert audit_cli.main([str(pair / "model"), "--consent", str(registry_path)]) == 1

  # Undo: reinstated in the registry, recorded in the ledger, the stale run restored.
  undo = ["--undo", "--community", "alpha", "--sweep", str(sweep_dir), "--consent",
          str(registry_path)]
  assert withdraw_cli.main(undo + ["--records", "train1,train2,train3"]) == 0
  out = capsys.readouterr().out
  assert "reinstated 3 record(s) of alpha" in out and "restored 1 stale run(s)" in out
  assert (pair / results.RESULT_FILENAME).exists() and not (pair / "STALE.json").exists()
  assert audit_cli.main([str(pair / "model"), "--consent", str(registry_path)]) == 0
  registry = consent.read_consents(registry_path)
  assert registry.communities == {}
  assert [(e["action"], e["records"]) for e in registry.ledger] == [
      ("withdraw", ["train1", "train2"]), ("withdraw", ["train3"]),
      ("reinstate", ["train1", "train2", "train3"])]
  assert [r.run for r in results.read_results(sweep_dir / results.TABLE_FILENAME)] == [
      "alpha_beta.L6.label_only.s0", "gamma.L6.label_only.s0"]
  before = registry_path.read_bytes()
  assert withdraw_cli.main(undo + ["--records", "train1"]) == 2
  assert "record(s) train1 of 'alpha' are not withdrawn" in capsys.readouterr().err
  assert withdraw_cli.main(undo) == 2
  assert "has not withdrawn entirely" in capsys.readouterr().err
  assert registry_path.read_bytes() == before

  # Whole community: withdrawn once (a repeat says so), undone, the run restored.
  assert withdraw_cli.main(["--community", "beta"] + common) == 0
  assert "withdrew community beta entirely" in capsys.readouterr().out
  assert withdraw_cli.main(["--community", "beta"] + common) == 0
  assert "beta had already withdrawn entirely; nothing new withdrawn" in capsys.readouterr().out
  assert not (pair / results.RESULT_FILENAME).exists()
  assert withdraw_cli.main(["--undo", "--community", "beta", "--sweep", str(sweep_dir), "--consent",
                            str(registry_path)]) == 0
  assert "restored 1 stale run(s)" in capsys.readouterr().out
  assert (pair / results.RESULT_FILENAME).exists()
  assert [e["action"] for e in consent.read_consents(registry_path).ledger][-3:] == [
      "withdraw", "withdraw", "reinstate"]
