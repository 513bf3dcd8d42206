"""The T5 student: Flax network, its config, the model wrapper and HF loading."""
