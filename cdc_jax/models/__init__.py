"""The T5 student.

Modules: ``t5_config`` (T5Config and size presets), ``t5`` (the Flax network),
``encoder_decoder`` (EncoderDecoderModel: init, loss, decoding, scoring;
``build_model``) and ``hf_t5`` (``load_hf_t5`` for local HF checkpoints).
Nothing is re-exported here, so ``from cdc_jax.models import t5_config`` in gin
files names the module, not its function of the same name.
"""
