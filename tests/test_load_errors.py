"""Errors at the door: broken weight files and bad shard flags give one line, early."""

import doctest
import json
import struct

import numpy as np
import pytest

from cdc_jax.models import llama_weights
from cdc_jax.teacher import jax_setup, launch, shards


def _tiny_gguf(path):
  import gguf
  writer = gguf.GGUFWriter(str(path), "llama")
  writer.add_uint32("llama.embedding_length", 8)
  writer.add_tensor("token_embd.weight", np.arange(128, dtype=np.float32).reshape(16, 8))
  writer.add_tensor("output_norm.weight", np.ones(8, np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return path


@pytest.mark.parametrize("keep", [4, 20, 0.5, -40, -4])
def test_truncated_gguf_is_one_line_naming_the_file(tmp_path, keep):
  data = _tiny_gguf(tmp_path / "full.gguf").read_bytes()
  assert llama_weights.open_gguf(tmp_path / "full.gguf").tensors[0].name == "token_embd.weight"
  cut = tmp_path / "cut.gguf"
  cut.write_bytes(data[:int(len(data) * keep) if isinstance(keep, float) else keep])
  with pytest.raises(ValueError) as info:
    llama_weights.open_gguf(cut)
  message = str(info.value)
  assert "\n" not in message
  assert message.startswith(f"{cut}: not a readable GGUF file ({cut.stat().st_size} bytes; "
                            "truncated or corrupt?): ")


def test_corrupt_gguf_header_is_one_line(tmp_path):
  bad = tmp_path / "bad.gguf"
  bad.write_bytes(b"GGUF" + b"\xff" * 60)
  with pytest.raises(ValueError, match=r"bad\.gguf: not a readable GGUF file .*version"):
    llama_weights.open_gguf(bad)


def _safetensors(path, header, data: bytes):
  raw = json.dumps(header).encode()
  path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
  return path


@pytest.mark.parametrize("header,data,expected", [
    ({"w": {"dtype": "F32", "shape": [4, 2], "data_offsets": [0, 32]}}, b"",
     r"tensor 'w': data_offsets \[0, 32\] do not fit shape \[4, 2\] of F32 in 0 data bytes"),
    ({"w": {"dtype": "F32", "shape": [4, 2], "data_offsets": [0, 32]}}, b"\0" * 20,
     r"in 20 data bytes"),
    ({"w": {"dtype": "F32", "shape": "4x2", "data_offsets": [0, 32]}}, b"\0" * 32,
     r"tensor 'w': malformed header entry .*'shape' must be a list"),
    ({"w": {"dtype": "F32", "shape": [8]}}, b"\0" * 32,
     r"tensor 'w': malformed header entry .*KeyError"),
    ({"w": [1, 2]}, b"", r"header is not an object of tensor entries"),
])
def test_broken_safetensors_is_one_line_naming_the_file(tmp_path, header, data, expected):
  path = _safetensors(tmp_path / "model.safetensors", header, data)
  with pytest.raises(ValueError, match=expected) as info:
    llama_weights.read_safetensors(path)
  assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_launcher_cli_prints_one_line_for_a_truncated_gguf(tmp_path, capsys):
  data = _tiny_gguf(tmp_path / "full.gguf").read_bytes()
  (tmp_path / "cut.gguf").write_bytes(data[:len(data) // 2])
  inp = tmp_path / "q.jsonl"
  inp.write_text(json.dumps({
      "id": "q0", "community": "c", "split": "test", "question": "Is ice cold?", "answer": "yes",
      "answer_type": "boolean", "rationales": {}, "teacher": "none",
      "provenance": {"source": "test", "license": "CC0-1.0"}}) + "\n")
  status = launch.main(["--input", str(inp), "--out", str(tmp_path / "out"), "--backend=jax",
                        f"--gguf={tmp_path / 'cut.gguf'}"])
  err = capsys.readouterr().err
  assert status == 1
  assert err.strip().splitlines() == [
      f"error: {tmp_path / 'cut.gguf'}: not a readable GGUF file ({len(data) // 2} bytes; "
      "truncated or corrupt?): " + err.split("truncated or corrupt?): ", 1)[1].strip()]


@pytest.mark.parametrize("flags,expected", [
    (["--num_shards=0"], "--num_shards=0: expected at least 1"),
    (["--num_shards=2", "--shard_index=2"],
     "--shard_index=2 is out of range for --num_shards=2 (expected 0..1)"),
    (["--shard_index=-1"], "--shard_index=-1 is out of range for --num_shards=1"),
    (["--chunk_size=0"], "--chunk_size=0: expected at least 1"),
])
def test_bad_shard_flags_are_refused_before_anything_loads(tmp_path, monkeypatch, capsys, flags,
                                                           expected):
  def no_model(*args, **kwargs):
    raise AssertionError("a model was loaded despite bad shard flags")
  monkeypatch.setattr(jax_setup, "backend_from_flags", no_model)
  monkeypatch.setattr(launch, "load_questions", no_model)
  with pytest.raises(SystemExit) as info:
    launch.main(["--input", str(tmp_path / "absent"), "--out", str(tmp_path / "out"),
                 "--backend=jax", "--random_tiny", *flags])
  assert info.value.code == 2
  assert expected in capsys.readouterr().err
  assert not (tmp_path / "out").exists()


def test_check_shard_flags_accepts_every_valid_pair():
  for num in (1, 3):
    for index in range(num):
      shards.check_shard_flags(index, num)
  finder = doctest.DocTestFinder()
  runner = doctest.DocTestRunner()
  for test in finder.find(shards.check_shard_flags, "check_shard_flags"):
    runner.run(test)
  assert runner.summarize(verbose=False) == (0, 1)
