"""Importing this module registers cdc_jax's SeqIO tasks (like a t5x user's task module).

It registers the embedded communities and every community manifest listed in
``$CDC_COMMUNITIES``; a gin file adds more through
``catalog.register_tasks.communities``. Task names:
``cdc.<community>.L<level>.<format>``. The repository's top-level ``tasks``
module is a thin alias of this one (an installed package does not claim that
generic name).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from cdc_jax.tasks import catalog  # pylint: disable=g-import-not-at-top

REGISTERED_COMMUNITIES = catalog.register_tasks()
