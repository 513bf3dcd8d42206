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

- ``consent``: the consent registry and its ledger (withdraw, reinstate), and
  the checks of what a run used against it; ``training_manifest``: what each
  training run used (written by training, which refuses withdrawn data).
- ``withdraw``: withdrawal from a sweep (stale runs, re-runs without the data,
  the undo), with ``sweep_usage`` (which runs used what); ``audit``: a
  checkpoint against current consents. Command lines: ``python -m
  cdc_jax.withdraw`` and ``python -m cdc_jax.audit``.

Formulas and choices: docs/contribution_controls.md.
"""
