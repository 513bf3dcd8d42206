"""Contribution controls: what a community shares, how much, and with whose consent.

Submodules (import them directly; this package imports nothing heavy):

- ``embeddings``: the teacher's word embeddings (SmolLM2 ``token_embd``) and
  the candidate vocabulary of the privacy mechanism.
- ``privacy``: token-level exponential mechanism over questions, perturbed
  community directories, and its CLI.
- ``variants``: sweeps over eps (perturbed communities per budget) and over
  the key-token budget k.
- ``attribution``: a key-token selector by gradient x input of a trained student.
- ``selection``: trace selection policies (learnability_gap of ``allocation``, heuristic,
  random) under explicit ``budgets``, with ``rewards`` from a model or the teacher;
  ``allocation_sweep``: a policy vs random at equal tokens.
- ``figures``: accuracy vs tokens shared (k).

Consent and withdrawal live in ``cdc_jax.consent``, ``cdc_jax.withdraw`` and
``cdc_jax.audit``. Formulas and choices: docs/contribution_controls.md.
"""
