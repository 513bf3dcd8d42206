"""Teacher backends: a Llama-family decoder in Flax that writes chain-of-thought.

Import the submodules directly (``cdc_jax.teacher.llama``,
``cdc_jax.teacher.generation``, ...); this package imports nothing heavy so that
``import cdc_jax.teacher`` stays cheap.
"""
