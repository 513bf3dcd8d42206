"""The T5 student.

Modules: ``t5_config`` (T5Config and size presets), ``t5`` (the Flax network;
its layers in ``t5_layers``), ``encoder_decoder`` (EncoderDecoderModel: init, loss, decoding, scoring;
``build_model``) and ``hf_t5`` (``load_hf_t5`` for local HF checkpoints);
``partitioning``, the one map from every model's logical axis names (students
and teacher) to mesh axes.
Nothing is re-exported here, so ``from cdc_jax.models import t5_config`` in gin
files names the module, not its function of the same name.
"""
