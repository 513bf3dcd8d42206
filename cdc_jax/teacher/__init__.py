"""Teacher traces: the questions, a teacher behind one backend protocol, sharded output, verify.

Modules: ``questions`` (the input), ``prompts`` (CoT and summary prompts),
``backends`` (the protocol) with ``jax_backend`` (``generation`` over the
shared Llama of ``cdc_jax.models``), ``openai_backend``, ``oracle_backend``
and ``tiny_model``; ``launch`` and ``shards`` (the sharded resumable
launcher), ``verify``, and the server (``serve``, ``batching``,
``openai_schema``). Import the submodules directly; this package imports
nothing heavy so that ``import cdc_jax.teacher`` stays cheap.
"""
