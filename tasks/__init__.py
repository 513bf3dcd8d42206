"""cdc_jax's SeqIO tasks, registered at import (in-repo alias of ``cdc_jax.tasks.register_all``).

Importing ``tasks`` registers the embedded communities and every community
manifest listed in ``$CDC_COMMUNITIES``. Outside a source checkout (an
installed wheel has no top-level ``tasks``) import
``cdc_jax.tasks.register_all`` instead.
"""

from cdc_jax.tasks.register_all import REGISTERED_COMMUNITIES  # pylint: disable=unused-import
