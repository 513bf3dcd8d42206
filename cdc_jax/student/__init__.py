"""The student's training machinery (T5X-style), below the entry points.

Modules: ``trainer`` (train state, sharded init, abstract state for restores,
the jitted step), ``checkpoints`` (orbax checkpoints and their metadata),
``input_pipeline`` (SeqIO -> batches that resume at a data position),
``optimizers`` (Adafactor, AdamW, schedules), ``prediction`` (restored
parameters and a batched ``Predictor``), and the library parts of the entry
points: ``training`` (the loop of ``python -m cdc_jax.train``), ``evaluation``
(``cdc_jax.evaluate``), ``inference`` (``cdc_jax.infer``) and ``lora_merge``
(``cdc_jax.merge_lora``). Mesh rules live in :mod:`cdc_jax.models.partitioning`,
shared with the teacher. Nothing is re-exported here.
"""
