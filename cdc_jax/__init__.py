"""cdc_jax: Conscious Data Contribution via community-driven chain-of-thought distillation.

Importing the package is cheap: nothing here imports JAX, TensorFlow or
SeqIO. Entry points are modules (``python -m cdc_jax.train``, ``.evaluate``,
``.sweep``, ``.data.import_traces``, ``.tasks.stats``, ``.teacher.launch``);
the gin configs ship inside the package (:data:`GIN_DIR`) and are on the
search path of every entry point (``--gin_file=experiments/embedded_tiny.gin``).
"""

from pathlib import Path

__version__ = "0.1.0"

# The gin configs: ``gin/`` of a source checkout, ``cdc_jax/gin/`` of an installed wheel.
_PACKAGE_DIR = Path(__file__).resolve().parent
GIN_DIR = (_PACKAGE_DIR / "gin" if (_PACKAGE_DIR / "gin").is_dir()
           else _PACKAGE_DIR.parent / "gin")

__all__ = ["GIN_DIR", "__version__"]
