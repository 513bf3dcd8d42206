"""Optional plugin: hand-written x86 CPU decode kernels for the Llama teacher.

``ffi`` builds and calls the kernels (AMX bf16 matmuls, fused decode attention,
argmax) through the XLA FFI; ``llama_ops`` plugs them into the shared Llama as
the ``"amx"`` ops (``cdc_jax.models.llama.get_ops("amx")``). Nothing outside
this package imports it directly: the model registry loads it by name, so an
install without a C++ compiler or on another CPU simply keeps the XLA path.
"""
