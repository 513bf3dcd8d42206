"""cdc_jax: Conscious Data Contribution via community-driven CoT distillation."""

import setuptools

setuptools.setup(
    name="cdc_jax",
    version="0.1.0",
    description="Community-driven chain-of-thought distillation into T5 students, in JAX.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["cdc_jax", "cdc_jax.*", "tasks"]),
    # The CPU kernels' C++ source is compiled on first use (teacher/cpu_kernels.py).
    package_data={"": ["*.gin"], "cdc_jax.teacher": ["kernels/*.cc"]},
    # Pinned versions live in requirements/*.txt (installed by `make`); these
    # are the direct dependencies for a plain `pip install`.
    install_requires=[
        "jax", "flax", "optax", "orbax-checkpoint", "seqio", "tensorflow-datasets",
        "tensorflow-cpu", "gin-config", "sentencepiece", "safetensors", "gguf", "ml_dtypes",
        "matplotlib", "pyglove", "clu",
    ],
    extras_require={"test": ["pytest", "pytest-xdist", "torch", "transformers"]},
)
