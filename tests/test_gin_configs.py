"""Gin files: every run, experiment and sweep file parses and binds what it promises."""

import gin
import pytest

from cdc_jax import config_cli, gin_checks
from cdc_jax.coalitions import sweep
from cdc_jax.models.encoder_decoder import EncoderDecoderModel


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_embedded_experiment_binds_a_tiny_model_and_the_trainer():
  config_cli.parse_gin(["gin/experiments/embedded_tiny.gin"],
                       ["MIXTURE_OR_TASK_NAME = 'cdc.trivia.L6.cot_label'", "MODEL_DIR = '/tmp/x'"])
  model = gin.query_parameter("%MODEL").scoped_configurable_fn()
  assert isinstance(model, EncoderDecoderModel)
  assert (model.config.emb_dim, model.config.vocab_size, model.config.dtype) == (64, 1024, "float32")
  assert gin.query_parameter("%TRAIN_STEPS") == 300
  assert gin.query_parameter("%TASK_FEATURE_LENGTHS") == {"inputs": 64, "targets": 96}


def test_demo_sweep_expands_to_every_coalition_and_two_seeds():
  config_cli.parse_gin(["gin/sweeps/embedded_demo.gin"], ["SWEEP_DIR = '/tmp/sweep'"])
  spec = gin.query_parameter("sweep.run_sweep.spec").scoped_configurable_fn()
  assert isinstance(spec, sweep.SweepSpec)
  runs = spec.runs()
  assert len(runs) == 7 * 2
  assert {r.level for r in runs} == {1} and {r.fmt for r in runs} == {"cot_label"}
  assert {r.seed for r in runs} == {0, 1} and not any(r.baseline for r in runs)
  assert gin.query_parameter("%RUN_GIN_FILES") == ["gin/experiments/coalition_tiny.gin"]


def test_bindings_override_files_and_missing_files_are_named():
  config_cli.parse_gin(["gin/experiments/embedded_tiny.gin"], ["TRAIN_STEPS = 7"])
  assert gin.query_parameter("%TRAIN_STEPS") == 7
  with pytest.raises(FileNotFoundError, match="gin file 'gin/nope.gin' not found"):
    config_cli.parse_gin(["gin/nope.gin"], [])
  assert config_cli.split_gin_bindings(["--gin.A=1", "--x", "--gin.b.c='d'"]) == (
      ["A = 1", "b.c = 'd'"], ["--x"])
  with pytest.raises(ValueError, match="expected --gin.NAME=VALUE"):
    config_cli.split_gin_bindings(["--gin.A"])


# ---------------------------------------------------------------------------
# Hardening (issue 16): typos, unquoted strings, missing and non-positive macros.

TINY = "gin/experiments/embedded_tiny.gin"
REQUIRED = ["MIXTURE_OR_TASK_NAME = 'cdc.trivia.L6.cot_label'", "MODEL_DIR = '/tmp/x'"]


@pytest.mark.parametrize("binding, message", [
    ("TRAIN_STEP = 5", "--gin.TRAIN_STEP=5: unknown macro 'TRAIN_STEP'; did you mean 'TRAIN_STEPS'?"),
    ("batch_size = 4", "unknown macro 'batch_size'; did you mean 'BATCH_SIZE'?"),
    ("train.train.train_step = 5", "--gin.train.train.train_step=5: Configurable 'train.train' "
     "doesn't have a parameter named 'train_step'.; did you mean 'train_steps'?"),
    ("trian.train.seed = 1", "No configurable matching 'trian.train'.; did you mean 'train.train'?"),
    ("MODEL_DIR = /tmp/run", "--gin.MODEL_DIR=/tmp/run: cannot parse the value '/tmp/run'; a string "
     "value needs quotes inside the flag: --gin.MODEL_DIR=\"'/tmp/run'\""),
    ("MODEL_DIR = run", "--gin.MODEL_DIR=run: cannot parse the value 'run'; a string value needs quotes"),
])
def test_binding_errors_name_the_flag_and_the_closest_name(binding, message):
  with pytest.raises(gin_checks.GinConfigError) as info:
    config_cli.parse_gin([TINY], [*REQUIRED, binding])
  assert message in str(info.value)


@pytest.mark.parametrize("binding, message", [
    ("TRAIN_STEPS = -1", "TRAIN_STEPS = -1: expected an integer >= 0 (set with --gin.TRAIN_STEPS=...)"),
    ("TRAIN_STEPS = 'five'", "TRAIN_STEPS = 'five': expected an integer >= 0"),
    ("BATCH_SIZE = 0", "BATCH_SIZE = 0: expected a positive integer"),
    ("BATCH_SIZE = 2.5", "BATCH_SIZE = 2.5: expected a positive integer"),
    ("LOG_EVERY = True", "LOG_EVERY = True: expected a positive integer"),
    ("TASK_FEATURE_LENGTHS = {'inputs': 0, 'targets': 8}", "TASK_FEATURE_LENGTHS = {'inputs': 0, "
     "'targets': 8}: expected {feature: length}"),
    ("TASK_FEATURE_LENGTHS = {'inputs': 'p101', 'targets': 8}", "TASK_FEATURE_LENGTHS"),
])
def test_non_positive_or_mistyped_step_batch_and_length_macros_are_refused(binding, message):
  with pytest.raises(gin_checks.GinConfigError) as info:
    config_cli.parse_gin([TINY], [*REQUIRED, binding])
  assert message in str(info.value)


def test_valid_overrides_still_parse():
  config_cli.parse_gin([TINY], [*REQUIRED, "TRAIN_STEPS = 0", "KEEP_CHECKPOINTS = None",
                                "TASK_FEATURE_LENGTHS = {'inputs': 'p95', 'targets': 8}",
                                "NEW_MACRO = 3", "train.train.seed = %NEW_MACRO"])
  assert gin.query_parameter("train.train.seed").config_key == ("NEW_MACRO", "gin.macro")
  assert gin.query_parameter("%NEW_MACRO") == 3
  assert gin.query_parameter("%TRAIN_STEPS") == 0


def test_missing_required_macro_is_named_with_its_flag_before_any_work(monkeypatch):
  from cdc_jax import train

  calls = []
  monkeypatch.setattr(train.distributed, "initialize", lambda **kw: calls.append(kw))
  with pytest.raises(gin_checks.GinConfigError, match=r"required macro\(s\) not set for "
                     r"cdc_jax\.train\.train: MODEL_DIR \(set them in a gin file or with "
                     r"--gin\.MODEL_DIR=\.\.\.\)"):
    train.main([f"--gin_file={TINY}", "--gin.MIXTURE_OR_TASK_NAME='cdc.trivia.L6.cot_label'"])
  gin.clear_config()
  config_cli.parse_gin(["gin/models/t5_1_1_tiny.gin", "gin/runs/eval.gin"], [])
  assert gin_checks.missing_macros("cdc_jax.evaluate.evaluate") == [
      "CHECKPOINT", "EVAL_OUTPUT_DIR", "MIXTURE_OR_TASK_NAME"]


def test_train_and_evaluate_check_their_arguments_before_registering_tasks():
  from cdc_jax.student import evaluation, training
  from tests import train_helpers

  registered = []
  common = dict(model=None, mixture_or_task_name="x")
  register = lambda: registered.append(1)
  settings = train_helpers.train_settings(register_tasks=register)
  with pytest.raises(ValueError, match=r"train_steps=-1: expected an integer >= 0"):
    training.train(**common, **settings, task_feature_lengths={"inputs": 8, "targets": 8},
                   batch_size=2, train_steps=-1, model_dir="/nonexistent")
  with pytest.raises(ValueError, match=r"batch_size=0: expected a positive integer"):
    training.train(**common, **settings, task_feature_lengths={"inputs": 8, "targets": 8},
                   batch_size=0, train_steps=5, model_dir="/nonexistent")
  with pytest.raises(ValueError, match=r"task_feature_lengths\['targets'\]='eight'"):
    training.train(**common, **settings, task_feature_lengths={"inputs": 8, "targets": "eight"},
                   batch_size=2, train_steps=5, model_dir="/nonexistent")
  with pytest.raises(ValueError, match=r"batch_size='four': expected a positive integer, got str"):
    evaluation.evaluate(**common, **train_helpers.eval_settings(batch_size="four",
                                                                register_tasks=register),
                        checkpoint="/nonexistent", output_dir="/nonexistent",
                        task_feature_lengths={"inputs": 8, "targets": 8})
  with pytest.raises(ValueError, match=r"no length for 'targets'"):
    evaluation.evaluate(**common, **train_helpers.eval_settings(register_tasks=register),
                        checkpoint="/nonexistent",
                        output_dir="/nonexistent", task_feature_lengths={"inputs": 8})
  assert registered == []


def test_run_gin_files_set_every_setting_the_entry_points_require():
  """Defaults live in one place: what a signature requires, gin/runs/*.gin sets."""
  import inspect

  from cdc_jax import evaluate, infer, merge_lora, train

  for module, gin_file in ((train, "train"), (evaluate, "eval"), (infer, "infer"),
                           (merge_lora, "merge_lora")):
    fn = getattr(module, module.__name__.rsplit(".", 1)[1])
    required = {n for n, p in inspect.signature(fn).parameters.items()
                if p.default is inspect.Parameter.empty}
    gin.clear_config()
    config_cli.parse_gin(["gin/models/t5_1_1_tiny.gin", f"gin/runs/{gin_file}.gin"], [])
    selector = f"{module.__name__}.{fn.__name__}"
    bound = set(gin.config._CONFIG[("", selector)])  # pylint: disable=protected-access
    assert required == bound, (gin_file, required ^ bound)
  gin.clear_config()


def test_train_gin_refuses_withdrawn_data_through_the_consent_check():
  """The library trainer does not import contribution/: gin hands it the consent check."""
  gin.clear_config()
  config_cli.parse_gin(["gin/models/t5_1_1_tiny.gin", "gin/runs/train.gin"], [])
  check = gin.query_parameter("train.train.check_training_data")
  assert check.configurable.selector == (
      "cdc_jax.contribution.training_manifest.write_training_manifest")
  assert not check.evaluate  # The function itself, called by train with the run's directory.
  gin.clear_config()
