"""Paper-scale setup: gin files, sweep grid, real communities, launch scripts, a CPU smoke run."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import gin
import pytest
import seqio

from cdc_jax import config_cli, names, run_inputs
from cdc_jax.coalitions import experiment, sweep
from cdc_jax.data import attach_split
from cdc_jax.data import records as R
from cdc_jax.data.importers import assembly
from cdc_jax.models.encoder_decoder import EncoderDecoderModel
from cdc_jax.student import checkpoints
from cdc_jax.tasks import catalog, vocabulary

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "gin/experiments/cdc_t5_base.gin"
SWEEP = "gin/sweeps/cdc_paper.gin"
SCRIPTS = ("prepare_real_communities.sh", "tpu_vm_sweep.sh", "slurm_sweep.sh", "claims_cpu.sh")
# Levels per community in ../shared/data/SOURCES.md; (train, test) records after import.
LEVELS = {"strategyqa": [1, 2, 3, 4, 5, 6], "svamp": [1, 2, 3, 4], "csqa": [1, 2, 3],
          "gsm8k": [1, 2]}
COUNTS = {"strategyqa": (1995, 290), "csqa": (9732, 1221), "svamp": (700, 300),
          "gsm8k": (7442, 1319)}


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture
def fresh_catalog(monkeypatch):
  """This module's own process vocabulary: other tests may have registered theirs first."""
  monkeypatch.setattr(catalog, "_STATE", {})


@pytest.fixture(scope="module")
def data_root(shared_data, tmp_path_factory) -> Path:
  """The four communities, imported by launch/prepare_real_communities.sh."""
  root = tmp_path_factory.mktemp("communities")
  proc = subprocess.run(
      ["bash", str(REPO / "launch/prepare_real_communities.sh"), f"--source={shared_data}",
       f"--python={sys.executable}", str(root)],
      capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"communities in {root}: strategyqa csqa svamp gsm8k" in proc.stdout
  return root


@pytest.fixture(scope="module")
def communities(data_root) -> dict[str, R.Community]:
  return {name: R.load_community(data_root / name) for name in COUNTS}


@pytest.fixture(scope="module")
def spm_model(communities) -> str:
  """A small vocabulary on some StrategyQA text (no real T5 spiece.model exists here)."""
  stqa = communities["strategyqa"]
  sample = R.Community(stqa.manifest, stqa.directory, {"train": stqa.records["train"][:200]},
                       stqa.report)
  return str(vocabulary.train_vocabulary(vocabulary.community_texts([sample]), vocab_size=1000))


def _required(tmp_path: Path, data_root: Path | None = None, spm: str | None = None) -> list[str]:
  hf = tmp_path / "hf_t5"
  hf.mkdir(exist_ok=True)
  (hf / "config.json").write_text("{}")
  if spm is None:
    spm = str(tmp_path / "spiece.model")
    Path(spm).write_bytes(b"")
  return [f"DATA_ROOT = '{data_root or tmp_path / 'data'}'", f"HF_CHECKPOINT = '{hf}'",
          f"SPM_MODEL = '{spm}'"]


def _value(selector: str):
  """The value of a binding or macro, evaluating '@fn()' references as a call would."""
  value = gin.query_parameter(selector)
  return value.scoped_configurable_fn() if hasattr(value, "scoped_configurable_fn") else value


# ---------------------------------------------------------------------------
# Gin files.


def test_experiment_is_a_t5_base_student_fine_tuned_from_the_hf_checkpoint(tmp_path):
  config_cli.parse_gin([EXPERIMENT], _required(tmp_path))
  model = _value("%MODEL")
  assert isinstance(model, EncoderDecoderModel)
  c = model.config
  assert (c.emb_dim, c.num_heads, c.num_encoder_layers, c.num_decoder_layers, c.mlp_dim) == (
      768, 12, 12, 12, 2048)
  assert (c.vocab_size, c.dtype, c.mlp_activations, c.logits_via_embedding) == (
      32128, "bfloat16", ("gelu", "linear"), False)
  assert _value("%INIT_FROM") == str(tmp_path / "hf_t5")
  assert _value("catalog.register_tasks.spm_model") == str(tmp_path / "spiece.model")
  assert _value("catalog.register_tasks.embedded") is False
  assert _value("%EXTRA_IDS") == 100
  assert _value("%COMMUNITIES") == [str(tmp_path / "data" / c / "community.json")
                                    for c in ("strategyqa", "csqa", "svamp", "gsm8k")]
  assert _value("%TASK_FEATURE_LENGTHS") == {"inputs": 512, "targets": 384}
  assert (_value("%BATCH_SIZE"), _value("%TRAIN_STEPS"), _value("%PACK")) == (64, 10000, False)
  assert (_value("%CHECKPOINT_EVERY"), _value("%MESH_SHAPE")) == (1000, (-1, 1))
  schedule = _value("%LEARNING_RATE_FN")
  assert [float(schedule(s)) for s in (0, 9999)] == [1e-3, 1e-3]
  assert gin.query_parameter("train.train.optimizer").configurable.selector == (
      "cdc_jax.student.optimizers.adafactor")
  assert str(gin.query_parameter("optimizers.adafactor.learning_rate")) == "%LEARNING_RATE_FN"


def test_unset_or_wrong_required_macros_fail_naming_the_macro(tmp_path):
  config_cli.parse_gin([EXPERIMENT], [])
  with pytest.raises(ValueError, match="HF_CHECKPOINT is required"):
    _value("%INIT_FROM")
  with pytest.raises(ValueError, match="SPM_MODEL is required"):
    _value("catalog.register_tasks.spm_model")
  with pytest.raises(ValueError, match="DATA_ROOT is required"):
    _value("%COMMUNITIES")
  config_cli.parse_gin([EXPERIMENT], [f"HF_CHECKPOINT = '{tmp_path}'",
                                      f"SPM_MODEL = '{tmp_path / 'nope.model'}'"])
  with pytest.raises(FileNotFoundError, match=f"HF_CHECKPOINT = '{tmp_path}' has no config.json"):
    _value("%INIT_FROM")
  with pytest.raises(FileNotFoundError, match="SPM_MODEL = .*nope.model' does not exist"):
    _value("catalog.register_tasks.spm_model")


def test_sweep_runs_every_coalition_at_every_level_its_members_have(tmp_path):
  config_cli.parse_gin([SWEEP], _required(tmp_path) + ["SWEEP_DIR = '/unused'"])
  spec = _value("sweep.run_sweep.spec")
  assert {c: list(v) for c, v in spec.community_levels.items()} == LEVELS
  assert (_value("%FORMATS"), _value("%SEEDS")) == (["cot_label"], [0, 1, 2])
  runs = spec.runs()
  # Coalitions of the communities that have the level: 15, 15, 7, 3, 1, 1 = 42 per seed.
  assert len(runs) == 42 * 3 and len({r.run_id for r in runs}) == len(runs)
  per_level = {lv: sorted(r.members for r in runs if r.level == lv and r.seed == 0)
               for lv in names.LEVELS}
  assert [len(per_level[lv]) for lv in names.LEVELS] == [15, 15, 7, 3, 1, 1]
  assert per_level[4] == [("strategyqa",), ("strategyqa", "svamp"), ("svamp",)]
  assert per_level[6] == [("strategyqa",)]
  assert len(spec.left_out()) == 6 * 15 - 42
  with pytest.raises(ValueError, match=r"community_levels has no levels for \['b'\]"):
    sweep.SweepSpec(communities=("a", "b"), community_levels={"a": [1]})
  assert all(r.evaluate_on == ("csqa", "gsm8k", "strategyqa", "svamp") for r in runs)
  assert _value("%RUN_GIN_BINDINGS") == _required(tmp_path) + [
      "COMMUNITY_NAMES = ['csqa', 'gsm8k', 'strategyqa', 'svamp']"]
  gin.clear_config()
  config_cli.parse_gin([SWEEP], _required(tmp_path) + [
      "SWEEP_DIR = '/unused'", "FORMATS = ['cot_label', 'label_only', 'step_by_step']",
      "SEEDS = [0]"])
  runs = _value("sweep.run_sweep.spec").runs()
  assert len(runs) == 42 * 3
  formats = ("cot_label", "label_only", "step_by_step")
  assert {f: sum(r.fmt == f for r in runs) for f in formats} == dict.fromkeys(formats, 42)


def test_sweep_level_table_matches_the_imported_data(communities):
  config_cli.parse_gin([SWEEP], ["SWEEP_DIR = '/unused'"])
  assert {c: list(communities[c].manifest.levels) for c in LEVELS} == _value("%COMMUNITY_LEVELS")


def test_macro_bindings_carry_sweep_macros_and_refuse_unset_ones():
  assert run_inputs.macro_bindings(macros={"A": "/x y", "B": [1, 2], "C": {"k": 0.5}},
                                   extra=["D = 3"]) == [
      "A = '/x y'", "B = [1, 2]", "C = {'k': 0.5}", "D = 3"]
  with pytest.raises(ValueError, match="SPM_MODEL is required"):
    run_inputs.macro_bindings(macros={"SPM_MODEL": None})
  with pytest.raises(ValueError, match="not a literal"):
    run_inputs.macro_bindings(macros={"X": object()})
  with pytest.raises(ValueError, match="invalid community name 'a/b'"):
    run_inputs.community_manifests(data_root="/d", communities=["a/b"])


def _toy(directory: Path, name: str, splits: dict[str, list[str]], answer_type: str = "number"):
  def rec(split, i, question):
    return R.TraceRecord(id=f"{split}{i}", community=name, split=split, question=question,
                         answer="3" if answer_type == "number" else "yes", answer_type=answer_type,
                         rationales={6: "Because."}, teacher="t",
                         provenance={"source": "toy", "license": "CC0-1.0"})
  manifest = R.CommunityManifest(name=name, description="toy", answer_type=answer_type,
                                 splits={s: f"{s}.jsonl" for s in splits}, license="CC0-1.0")
  return R.write_community(directory / name, manifest, {
      s: [rec(s, i, q) for i, q in enumerate(qs)] for s, qs in splits.items()})


def test_attach_split_takes_only_held_out_questions(tmp_path):
  _toy(tmp_path, "math", {"train": ["What is 1+2?", "What is 2+1?"]})
  _toy(tmp_path, "official", {"train": ["what is 1 + 2", "What is 0+3?"],
                              "test": ["What is 0+3?", "What is 3+0?"]})
  report = attach_split.attach_split(tmp_path / "math", tmp_path / "official",
                                     source_splits=["train", "test"], out=tmp_path / "out")
  assert (report.attached, report.overlapping, report.duplicates) == (2, 1, 1)
  assert report.candidates == {"train": 2, "test": 2}
  out = R.load_community(tmp_path / "out")
  assert [r.question for r in out.records["test"]] == ["What is 0+3?", "What is 3+0?"]
  first = out.records["test"][0]
  assert (first.community, first.split, first.rationales) == ("math", "test", {})
  assert first.id == assembly.stable_id(assembly.question_key("What is 0+3?"), "test")
  assert first.provenance["attached_from"] == {"community": "official", "split": "train",
                                               "id": "train1"}
  assert out.records["train"] == R.load_community(tmp_path / "math").records["train"]
  assert "test" not in R.read_manifest(tmp_path / "math").splits  # In place only without out.
  with pytest.raises(ValueError, match="already has a 'test' split"):
    attach_split.attach_split(tmp_path / "out", tmp_path / "official", source_splits=["test"])
  with pytest.raises(ValueError, match=r"no split\(s\) \['validation'\]"):
    attach_split.attach_split(tmp_path / "math", tmp_path / "official",
                              source_splits=["validation"])
  _toy(tmp_path, "yesno", {"train": ["Is it?"]}, answer_type="boolean")
  with pytest.raises(ValueError, match="has 'number' answers but .*'boolean'"):
    attach_split.attach_split(tmp_path / "yesno", tmp_path / "official", source_splits=["test"])
  assert attach_split.main([f"--target={tmp_path / 'math'}", f"--source={tmp_path / 'math'}",
                            "--source_splits=train"]) == 1  # Every question is in train.


# ---------------------------------------------------------------------------
# Real communities and their SeqIO tasks.


def test_prepared_communities_have_train_and_disjoint_test_splits(data_root, communities):
  for name, (train, test) in COUNTS.items():
    community = communities[name]
    assert community.manifest.teacher == "llama-3-70b"
    assert (len(community.records["train"]), len(community.records["test"])) == (train, test)
    keys = {s: {assembly.question_key(r.question, r.choices) for r in recs}
            for s, recs in community.records.items()}
    assert not keys["train"] & keys["test"], name
    assert all(not r.rationales for r in community.records["test"])
  gsm8k_test = communities["gsm8k"].records["test"]
  assert {r.provenance["attached_from"]["community"] for r in gsm8k_test} == {"gsm8k_official"}
  svamp_from = [r.provenance["attached_from"]["split"]
                for r in communities["svamp"].records["test"]]
  assert len(svamp_from) == 300 and set(svamp_from) == {"train", "test"}
  for report in ("strategyqa", "csqa", "svamp", "gsm8k", "gsm8k_test", "svamp_test"):
    assert (data_root / "reports" / f"{report}.txt").stat().st_size > 0


def test_real_tasks_resolve_and_coalition_mixtures_have_their_members(
    data_root, communities, spm_model, tmp_path, fresh_catalog):
  config_cli.parse_gin([EXPERIMENT], _required(tmp_path, data_root, spm_model))
  register = config_cli.configured("cdc_jax.tasks.catalog", "register_tasks")
  assert register() == ["strategyqa", "csqa", "svamp", "gsm8k"]
  for name, (train, test) in COUNTS.items():
    task = seqio.get_mixture_or_task(names.task_name(name, 1, "cot_label"))
    assert (task.num_input_examples("train"), task.num_input_examples("test")) == (
        train - (name in ("strategyqa", "svamp")), test)  # One question each lacks level 1.
  # A level the data lacks leaves no training examples: why the sweep skips it.
  assert seqio.get_mixture_or_task("cdc.gsm8k.L5.cot_label").num_input_examples("train") == 0
  task = seqio.get_mixture_or_task("cdc.svamp.L1.cot_label")
  first = next(task.get_dataset(sequence_length={"inputs": 512, "targets": 64}, split="test",
                                shuffle=False).as_numpy_iterator())
  record = communities["svamp"].records["test"][0]
  assert first["inputs_pretokenized"].decode() == " ".join(record.question.split())
  assert first["targets_pretokenized"].decode() == record.answer

  mixture = experiment.register_mixture(experiment.CoalitionSpec(
      members=("svamp", "csqa", "strategyqa", "gsm8k"), level=1, fmt="cot_label"))
  assert mixture == "cdc.csqa_gsm8k_strategyqa_svamp.L1.cot_label"
  mix = seqio.get_mixture_or_task(mixture)
  usable = {"csqa": 9732, "gsm8k": 7442, "strategyqa": 1994, "svamp": 699}
  assert {t.name: mix.get_rate(t) for t in mix.tasks} == pytest.approx(
      {names.task_name(c, 1, "cot_label"): n / sum(usable.values()) for c, n in usable.items()})
  pair = experiment.register_mixture(experiment.CoalitionSpec(
      members=("svamp", "strategyqa"), level=4, fmt="step_by_step"))
  assert sorted(t.name for t in seqio.get_mixture_or_task(pair).tasks) == [
      "cdc.strategyqa.L4.step_by_step:explain", "cdc.strategyqa.L4.step_by_step:predict",
      "cdc.svamp.L4.step_by_step:explain", "cdc.svamp.L4.step_by_step:predict"]


def test_tiny_student_trains_on_real_strategyqa_with_the_paper_config(
    data_root, spm_model, tmp_path, fresh_catalog):
  model_dir = tmp_path / "model"
  config_cli.parse_gin([EXPERIMENT], _required(tmp_path, data_root, spm_model) + [
      # The paper config with a tiny student: no T5-base weights or 32k vocabulary here.
      "t5_config.t5_config.size = 'tiny'", "VOCAB_SIZE = 1152", "INIT_FROM = None",
      "COMMUNITY_NAMES = ['strategyqa']", "TRAIN_STEPS = 3", "BATCH_SIZE = 4",
      "TASK_FEATURE_LENGTHS = {'inputs': 48, 'targets': 64}",
      "MIXTURE_OR_TASK_NAME = 'cdc.strategyqa.L6.cot_label'", f"MODEL_DIR = '{model_dir}'"])
  assert _value("%MODEL").config.dtype == "bfloat16"
  metrics = config_cli.configured("cdc_jax.train", "train")(tensorboard=False)
  assert math.isfinite(metrics["loss"]) and metrics["loss"] > 0
  assert checkpoints.Checkpointer(model_dir).latest_step() == 3
  logged = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
  assert [row["step"] for row in logged] == [3]


# ---------------------------------------------------------------------------
# Launch scripts (no cluster here: fake sbatch/gcloud on PATH).


def _bash(args: list[str], *, path_prefix: Path | None = None,
          **env: str) -> subprocess.CompletedProcess:
  full_env = dict(os.environ, **env)
  if path_prefix is not None:
    full_env["PATH"] = f"{path_prefix}{os.pathsep}{full_env['PATH']}"
  return subprocess.run(["bash", *args], cwd=REPO, capture_output=True, text=True, timeout=60,
                        env=full_env)


def _fake(bin_dir: Path, name: str, body: str) -> None:
  bin_dir.mkdir(exist_ok=True)
  path = bin_dir / name
  path.write_text("#!/usr/bin/env bash\nprintf '%s\\n' \"$@\" >> \"$FAKE_LOG\"\n"
                  "echo ---- >> \"$FAKE_LOG\"\n" + body)
  path.chmod(0o755)


@pytest.mark.parametrize("script", SCRIPTS)
def test_launch_script_parses_prints_usage_and_runs_nothing_when_sourced(script, tmp_path):
  path = f"launch/{script}"
  text = (REPO / path).read_text()
  assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
  assert _bash(["-n", path]).returncode == 0
  helped = _bash([path, "--help"])
  assert helped.returncode == 0 and helped.stdout.startswith(f"Usage: launch/{script} ")
  bare = _bash([path])
  assert bare.returncode == 2 and f"Usage: launch/{script}" in bare.stderr
  assert bare.stderr.splitlines()[-1].endswith(("is required", "are required"))
  assert _bash([path, "--bogus", "x"]).stderr.splitlines()[-1].endswith("unknown option --bogus")
  # Sourcing defines functions only: no fake command is called, nothing is printed.
  _fake(tmp_path / "bin", "sbatch", "")
  _fake(tmp_path / "bin", "gcloud", "")
  sourced = _bash(["-c", f"source {path}; declare -F main"], path_prefix=tmp_path / "bin",
                  FAKE_LOG=str(tmp_path / "log"))
  assert (sourced.returncode, sourced.stdout, sourced.stderr) == (0, "main\n", "")
  assert not (tmp_path / "log").exists()


def test_slurm_sweep_submits_one_array_task_per_run_of_the_paper_sweep(tmp_path):
  sweep_dir = tmp_path / "sweep"
  config_cli.parse_gin([SWEEP], _required(tmp_path) + [f"SWEEP_DIR = '{sweep_dir}'"])
  assert config_cli.configured("cdc_jax.coalitions.sweep", "run_sweep")(dry_run=True) == []
  lines = (sweep_dir / "commands.txt").read_text().splitlines()
  assert len(lines) == 126 and all("cdc_jax.coalitions.experiment --run_dir=" in l for l in lines)
  config = json.loads((sweep_dir / "strategyqa.L6.cot_label.s2" / "run.json").read_text())
  assert config["gin_files"] == [EXPERIMENT]
  assert config["gin_bindings"][:3] == _required(tmp_path)

  log = tmp_path / "sbatch.log"
  _fake(tmp_path / "bin", "sbatch", "echo 'Submitted batch job 7'\n")
  proc = _bash(["launch/slurm_sweep.sh", "--partition=gpu", "--gpus_per_node=8",
                "--max_parallel=16", str(sweep_dir), "--", "--exclusive"],
               path_prefix=tmp_path / "bin", FAKE_LOG=str(log))
  assert proc.returncode == 0, proc.stderr
  assert "Submitted batch job 7" in proc.stdout
  args = log.read_text().splitlines()
  assert args[0] == "--array=0-125%16" and args[-1] == "----"
  assert {"--partition=gpu", "--gpus-per-node=8", "--nodes=1", "--exclusive",
          f"--output={sweep_dir}/slurm/%A_%a.out"} <= set(args)
  script = Path(args[-2])
  assert script.parent == sweep_dir / "slurm" and script.suffix == ".sbatch"
  assert _bash(["-n", str(script)]).returncode == 0
  snapshot = next((sweep_dir / "slurm").glob("commands-*.txt"))
  assert snapshot.read_text().splitlines() == lines


def test_slurm_array_task_runs_its_own_line(tmp_path):
  sweep_dir = tmp_path / "sweep"
  sweep_dir.mkdir()
  (sweep_dir / "commands.txt").write_text("echo first\n\necho 'second run'\nexit 3\n")
  proc = _bash(["launch/slurm_sweep.sh", "--print", str(sweep_dir)])
  assert proc.returncode == 0 and "--array=0-2 " in proc.stdout
  script = next((sweep_dir / "slurm").glob("array-*.sbatch"))
  outputs = [_bash([str(script)], SLURM_ARRAY_TASK_ID=str(i)) for i in range(4)]
  assert [p.returncode for p in outputs] == [0, 0, 3, 1]
  assert outputs[1].stdout.splitlines()[-1] == "second run"
  assert "no line 4" in outputs[3].stderr
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "commands.txt").write_text("")
  assert "nothing to submit" in _bash(["launch/slurm_sweep.sh", str(empty)]).stdout


def test_tpu_vm_sweep_runs_each_line_on_all_workers_and_reports_failures(tmp_path):
  sweep_dir = tmp_path / "sweep"
  sweep_dir.mkdir()
  command = "/venv/bin/python -m cdc_jax.coalitions.experiment"
  (sweep_dir / "commands.txt").write_text(
      f"{command} '--run_dir={sweep_dir}/a b.L1.cot_label.s0'\n"
      f"{command} --run_dir={sweep_dir}/bad.L1.cot_label.s0\n")
  log = tmp_path / "gcloud.log"
  _fake(tmp_path / "bin", "gcloud",
        'case "$*" in *bad.L1*) echo boom; exit 4;; esac\necho trained\n')
  proc = _bash(["launch/tpu_vm_sweep.sh", "--tpu=slice", "--zone=us-central2-b",
                "--repo_dir=/home/me/cdc", str(sweep_dir), "--", "--tunnel-through-iap"],
               path_prefix=tmp_path / "bin", FAKE_LOG=str(log))
  assert proc.returncode == 1
  assert "1 of 2 runs failed: bad.L1.cot_label.s0" in proc.stderr
  calls = [c.strip("\n").splitlines() for c in log.read_text().split("----") if c.strip()]
  assert len(calls) == 2
  assert calls[0][:7] == ["compute", "tpus", "tpu-vm", "ssh", "slice", "--zone=us-central2-b",
                          "--worker=all"]
  assert "--tunnel-through-iap" in calls[0]
  assert calls[0][-1] == (
      "--command=cd /home/me/cdc && PYTHONPATH=/home/me/cdc /venv/bin/python -m "
      f"cdc_jax.coalitions.experiment --run_dir={sweep_dir}/a\\ b.L1.cot_label.s0 --multihost_auto")
  assert (sweep_dir / "tpu_logs" / "a b.L1.cot_label.s0.log").read_text() == "trained\n"
  assert (sweep_dir / "tpu_logs" / "bad.L1.cot_label.s0.log").read_text() == "boom\n"
