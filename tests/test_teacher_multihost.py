"""The launcher's jax teacher sharded over two local processes (multi-host) and on one host.

Two processes with 2 fake CPU devices each join one ``jax.distributed`` system
and shard the tiny random teacher over a (data, model) = (2, 2) mesh. Their
traces must equal those of one process on one device; only process 0 writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cdc_jax.data import records as records_lib
from cdc_jax.data import synthetic
from cdc_jax.teacher import launch, shards, verify
from tests import ports

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def strategy(tmp_path_factory) -> Path:
  out = tmp_path_factory.mktemp("communities")
  config = synthetic.SyntheticConfig(train_size=6, test_size=4, num_towns=30)
  synthetic.build_embedded_communities(out, config, communities=("strategy",))
  return out / "strategy"


def _flags(inp: Path, out: Path, *extra: str) -> list[str]:
  return [sys.executable, "-m", "cdc_jax.teacher.launch", "--input", str(inp), "--out", str(out),
          "--backend", "jax", "--random_tiny", "--splits", "test", "--levels", "1,6",
          "--max_new_tokens", "24", "--summary_max_new_tokens", "16", "--chunk_size", "2",
          "--progress_interval", "1000", *extra]


def _env(devices: int) -> dict[str, str]:
  return dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def _records(out: Path) -> list[tuple]:
  return [(r.id, r.rationales, r.teacher_answer)
          for r in records_lib.read_records(out / "traces-00000-of-00001.jsonl")]


def test_two_process_sharded_teacher_matches_one_device(strategy, tmp_path):
  single = subprocess.run(_flags(strategy, tmp_path / "single"), env=_env(1),
                          capture_output=True, text=True, timeout=300, check=False)
  assert single.returncode == 0, single.stderr[-3000:]

  port = ports.free_port()
  out = tmp_path / "multi"
  procs = [subprocess.Popen(
      _flags(strategy, out, "--mesh_shape", "2,2", "--coordinator_address", f"127.0.0.1:{port}",
             "--num_processes", "2", "--process_id", str(i)),
      env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  logs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, logs):
    assert p.returncode == 0, err[-3000:]
  assert "process 1 of 2 ran 2 chunks with the lead" in logs[1][1]

  assert _records(out) == _records(tmp_path / "single")
  report = verify.verify_output(out, launch.load_questions(strategy, splits=("test",)))
  assert report.ok, str(report)
  meta = shards.read_meta(out, 0, 1)
  assert meta["config"]["backend"]["mesh"] == {"data": 2, "model": 2}
  # Process 1 wrote nothing: the shard directory holds only the lead's files.
  assert sorted(p.name for p in out.iterdir()) == sorted(
      p.name for p in (tmp_path / "single").iterdir())


def test_mesh_shape_flag_is_checked():
  with pytest.raises(SystemExit):
    launch.parse_args(["--input", "x", "--out", "y", "--mesh_shape", "2"])
  with pytest.raises(SystemExit):
    launch.parse_args(["--input", "x", "--out", "y", "--gguf", "a.gguf", "--safetensors", "d"])
  args = launch.parse_args(["--input", "x", "--out", "y", "--mesh_shape", "1,8",
                            "--dtype", "bfloat16"])
  # An unset flag passes nothing: the Generator's own default ("auto") applies.
  assert args.mesh_shape == (1, 8) and args.dtype == "bfloat16" and args.kernels is None
  with pytest.raises(SystemExit):
    launch.parse_args(["--input", "x", "--out", "y", "--kernels", "fast"])
  from cdc_jax.models import llama
  from cdc_jax.teacher import jax_setup
  assert sorted(jax_setup.DTYPES) == sorted(llama.DTYPES)
  assert jax_setup.KERNELS == ("auto",) + llama.ops_names()
  tiny_amx = launch.parse_args(["--input", "x", "--out", "y", "--random_tiny", "--kernels", "amx"])
  with pytest.raises(ValueError, match="--random_tiny runs on the XLA path; drop --kernels amx"):
    jax_setup.backend_from_flags(tiny_amx)


def _tiny_hf_dir(path: Path) -> Path:
  """A HF Llama directory as Llama-3 ships one: bfloat16 safetensors, tokenizer files."""
  import json

  import torch
  import transformers

  from cdc_jax.teacher import tiny_model
  tok = tiny_model.tiny_tokenizer()
  torch.manual_seed(0)
  config = transformers.LlamaConfig(
      vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=1024,
      tie_word_embeddings=False, bos_token_id=None, eos_token_id=tok.eos_id)
  model = transformers.LlamaForCausalLM(config)
  with torch.no_grad():  # Larger weights than the init, so replies vary by question.
    for p in model.parameters():
      if p.ndim > 1:
        p.mul_(20.0)
  model.to(torch.bfloat16).save_pretrained(path)
  tok.backend.save(str(path / "tokenizer.json"))
  (path / "tokenizer_config.json").write_text(json.dumps({
      "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "add_bos_token": False,
      "chat_template": tok.chat_template}))
  return path


def test_launcher_loads_a_bfloat16_safetensors_teacher(strategy, tmp_path):
  teacher = _tiny_hf_dir(tmp_path / "tiny-llama")
  out = tmp_path / "out"
  argv = _flags(strategy, out, "--safetensors", str(teacher), "--dtype", "bfloat16",
                "--max_seq_len", "1024")[3:]
  argv.remove("--random_tiny")
  assert launch.main(argv) == 0
  report = verify.verify_output(out, launch.load_questions(strategy, splits=("test",)))
  assert report.ok, str(report)
  assert sum(report.records.values()) + len(report.failures) == 4
  meta = shards.read_meta(out, 0, 1)
  assert meta["config"]["backend"] == {"backend": "jax", "model": "tiny-llama",
                                       "weights": "tiny-llama (safetensors)", "dtype": "bfloat16",
                                       "kernels": "xla"}
  assert meta["stats"]["completion_tokens"] > 0
