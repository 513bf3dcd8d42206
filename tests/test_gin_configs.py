"""Gin files: every run, experiment and sweep file parses and binds what it promises."""

import gin
import pytest

from cdc_jax import config_cli, sweep
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


def test_demo_sweep_expands_to_every_coalition_at_two_levels():
  config_cli.parse_gin(["gin/sweeps/embedded_demo.gin"], ["SWEEP_DIR = '/tmp/sweep'"])
  spec = gin.query_parameter("sweep.run_sweep.spec").scoped_configurable_fn()
  assert isinstance(spec, sweep.SweepSpec)
  runs = spec.runs()
  assert len(runs) == 7 * 2
  assert {r.level for r in runs} == {1, 6} and {r.fmt for r in runs} == {"cot_label"}
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
