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
    # Only cdc_jax: the repository's top-level `tasks` module is an in-repo alias of
    # cdc_jax.tasks.register_all and must not claim that generic name in site-packages.
    packages=setuptools.find_packages(include=["cdc_jax", "cdc_jax.*"]) + ["cdc_jax.gin"],
    # The gin configs install as cdc_jax/gin/ (found by config_cli's search path, as t5x's are).
    package_dir={"cdc_jax.gin": "gin"},
    # C++ sources of the CPU kernels are compiled on first use.
    package_data={"cdc_jax.gin": ["*.gin", "*/*.gin"], "": ["*.cc", "*/*.cc"]},
    # Pinned versions live in requirements/*.txt (installed by `make`); these
    # are the direct dependencies for a plain `pip install`.
    install_requires=[
        "jax", "flax", "optax", "orbax-checkpoint", "seqio", "tensorflow-datasets",
        "tensorflow-cpu", "gin-config", "sentencepiece", "safetensors", "gguf", "ml_dtypes",
        "matplotlib", "pyglove", "clu",
        "fastapi", "starlette", "uvicorn", "h11", "pydantic", "openai",
    ],
    extras_require={"test": ["pytest", "pytest-xdist", "torch", "transformers"]},
)
