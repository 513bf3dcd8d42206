r"""Sweeps over contribution controls: privacy budget eps, key-token budget k.

    python -m cdc_jax.contribution.variants --gin_file=gin/sweeps/privacy_eps.gin \
        --gin.SWEEP_DIR="'/tmp/privacy_sweep'" [--workers=2] [--dry_run]

A control changes the data a run trains on, not the grid, so each value is a
*variant*: the same :class:`~cdc_jax.coalitions.sweep.SweepSpec` run with the value
recorded in every result (``eps`` or ``selection``) and extra gin bindings
for its runs. For eps the bindings point the runs at communities whose
training questions were perturbed with that budget, materialised once under
``SWEEP_DIR/.communities/<mechanism>_eps<eps>/<community>`` (dot-directory:
not a run); eps None runs on the source communities, the non-private
baseline the report's privacy-utility figure draws dotted. Run ids carry
eps / selection, so all variants share one sweep directory and one results
table.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

from cdc_jax import io as io_lib
from cdc_jax.coalitions import results
from cdc_jax.coalitions import sweep as sweep_lib
from cdc_jax.data import records as records_lib

PRIVATE_COMMUNITIES_DIR = ".communities"
KEY_TOKENS_GIN = "gin/contribution/key_tokens.gin"


@dataclasses.dataclass(frozen=True)
class Variant:
  """One value of a swept control.

  Attributes:
    eps: privacy budget recorded in the variant's results (None: not private).
    selection: contribution policy recorded in its results.
    gin_bindings: bindings its runs add to the sweep's.
  """
  eps: float | None = None
  selection: str | None = None
  gin_bindings: tuple[str, ...] = ()


def community_bindings(manifests: Sequence[str | Path]) -> tuple[str, ...]:
  """Bindings that make a run register exactly ``manifests`` (no embedded communities)."""
  return ("catalog.register_tasks.embedded = False",
          f"COMMUNITIES = {[str(m) for m in manifests]!r}")


def run_variants(*, spec: sweep_lib.SweepSpec, variants: Sequence[Variant], sweep_dir: str,
                 gin_files: Sequence[str], gin_bindings: Sequence[str] = (), workers: int = 1,
                 dry_run: bool = False) -> list[results.RunResult]:
  """Runs ``spec`` once per variant in ``sweep_dir``; returns all finished results.

  A failed variant does not stop the others; failures are raised at the end.
  ``commands.txt`` lists the unfinished runs of every variant.
  """
  sweep_dir_path = Path(sweep_dir)
  commands, failures, rows = [], [], []
  for variant in variants:
    sub = dataclasses.replace(spec, eps_values=(variant.eps,), selection=variant.selection)
    try:
      rows = sweep_lib.run_sweep(spec=sub, sweep_dir=str(sweep_dir_path), gin_files=list(gin_files),
                          gin_bindings=[*gin_bindings, *variant.gin_bindings], workers=workers,
                          dry_run=dry_run)
    except RuntimeError as e:
      failures.append(f"eps={variant.eps} selection={variant.selection}: {e}")
    listing = sweep_dir_path / "commands.txt"
    if listing.exists():
      commands.append(listing.read_text())
  io_lib.atomic_write_text(sweep_dir_path / "commands.txt", "".join(commands))
  if failures:
    raise RuntimeError("variants failed:\n" + "\n".join(failures))
  return rows


# ---------------------------------------------------------------------------
# Privacy budgets.


def _source_manifests(spec: sweep_lib.SweepSpec,
                      source_communities: Sequence[str | Path]) -> list[Path]:
  if source_communities:
    manifests = [Path(m) for m in source_communities]
  else:
    from cdc_jax.tasks import catalog

    manifests = catalog.embedded_communities()
  by_name = {records_lib.read_manifest(m).name: m for m in manifests}
  missing = sorted(set(spec.communities) - set(by_name))
  if missing:
    raise ValueError(f"sweep communities {missing} are not among the source communities "
                     f"{sorted(by_name)}")
  return [by_name[name] for name in sorted(spec.communities)]


def _variant_name(mechanism: str, eps: float) -> str:
  return f"{mechanism}_eps{eps:g}"


def materialise_private_communities(
    sources: Sequence[str | Path], root: str | Path, *, eps_values: Sequence[float],
    mechanism: str = "exponential", seed: int = 0, splits: Sequence[str] = ("train",),
    embeddings=None) -> dict[float, list[Path]]:
  """Perturbed copies of ``sources`` per eps under ``root``; returns eps -> manifests.

  A copy whose ``privacy.json`` matches the source's content hash and the
  parameters is reused, so re-running a sweep does not resample.
  """
  from cdc_jax.contribution import privacy

  out: dict[float, list[Path]] = {}
  for eps in eps_values:
    privacy.check_mechanism(mechanism, eps)
    manifests = []
    for source in sources:
      community = records_lib.load_community(source)
      target = Path(root) / _variant_name(mechanism, eps) / community.name
      summary_path = target / privacy.PRIVACY_FILENAME
      want = {"source_sha256": privacy.community_fingerprint(community), "eps": float(eps),
              "mechanism": mechanism, "seed": seed, "splits": list(splits)}
      if summary_path.exists() and (target / records_lib.MANIFEST_FILENAME).exists():
        have = json.loads(summary_path.read_text())
        if all(have.get(k) == v for k, v in want.items()):
          manifests.append(target / records_lib.MANIFEST_FILENAME)
          continue
      if embeddings is None:
        from cdc_jax.contribution import embeddings as embeddings_lib

        embeddings = embeddings_lib.teacher_word_embeddings()
      summary = privacy.perturb_community(source, target, eps=eps, mechanism=mechanism,
                                          seed=seed, splits=splits, embeddings=embeddings)
      kept = sum(c["kept"] for c in summary["counts"].values())
      sampled = sum(c["sampled"] for c in summary["counts"].values())
      print(f"{target}: {kept} of {sampled} sampled words kept at eps={eps:g}", flush=True)
      manifests.append(target / records_lib.MANIFEST_FILENAME)
    out[float(eps)] = manifests
  return out


def run_privacy_sweep(*, spec: sweep_lib.SweepSpec, eps_values: Sequence[float | None],
                      sweep_dir: str, gin_files: Sequence[str], gin_bindings: Sequence[str] = (),
                      mechanism: str = "exponential", source_communities: Sequence[str] = (),
                      seed: int = 0, splits: Sequence[str] = ("train",), workers: int = 1,
                      dry_run: bool = False, embeddings=None,
                      ) -> list[results.RunResult]:
  """The grid of ``spec`` at each privacy budget (None: the source communities).

  Args:
    spec: the grid (its own ``eps_values`` are replaced).
    eps_values: budgets; None adds the non-private baseline.
    sweep_dir: one directory for all variants.
    gin_files, gin_bindings: of every run (see ``gin/sweeps/privacy_eps.gin``).
    mechanism: 'exponential' or 'adaptive'.
    source_communities: manifests of the communities (default: embedded).
    seed: perturbation seed.
    splits: splits whose questions are perturbed.
    workers, dry_run: as for :func:`cdc_jax.coalitions.sweep.run_sweep`.
    embeddings: word embeddings (default: the SmolLM2 teacher's).
  """
  sources = _source_manifests(spec, source_communities)
  private = materialise_private_communities(
      sources, Path(sweep_dir) / PRIVATE_COMMUNITIES_DIR,
      eps_values=[e for e in eps_values if e is not None], mechanism=mechanism, seed=seed,
      splits=splits, embeddings=embeddings)
  variants = [Variant(eps=None if eps is None else float(eps),
                      gin_bindings=community_bindings(sources if eps is None
                                                      else private[float(eps)]))
              for eps in eps_values]
  return run_variants(spec=spec, variants=variants, sweep_dir=sweep_dir, gin_files=gin_files,
                      gin_bindings=gin_bindings, workers=workers, dry_run=dry_run)


# ---------------------------------------------------------------------------
# Key-token budgets.


def key_tokens_selection(k: int, selector: str = "salience") -> str:
  """The ``selection`` recorded for key_tokens runs: 'key_tokens:k=4' (or with the selector)."""
  return f"key_tokens:k={k}" if selector == "salience" else f"key_tokens:{selector}:k={k}"


def run_key_tokens_sweep(*, spec: sweep_lib.SweepSpec, k_values: Sequence[int], sweep_dir: str,
                         gin_files: Sequence[str], gin_bindings: Sequence[str] = (),
                         selector: str = "salience", workers: int = 1, dry_run: bool = False,
                         ) -> list[results.RunResult]:
  """The grid of ``spec`` in the key_tokens format at each k (tokens shared).

  Runs also read ``gin/contribution/key_tokens.gin`` (task options from the
  macros KEY_TOKENS_K and KEY_TOKEN_SELECTOR, bound per variant); the
  'attribution' selector also needs ``gin/contribution/attribution.gin`` in
  ``gin_files``. Results record ``selection='key_tokens:k=<k>'``.
  """
  spec = dataclasses.replace(spec, formats=("key_tokens",))
  gin_files = [*gin_files] + ([KEY_TOKENS_GIN] if KEY_TOKENS_GIN not in gin_files else [])
  variants = [Variant(selection=key_tokens_selection(k, selector), gin_bindings=(
      f"KEY_TOKENS_K = {int(k)}", f"KEY_TOKEN_SELECTOR = {selector!r}")) for k in k_values]
  return run_variants(spec=spec, variants=variants, sweep_dir=sweep_dir, gin_files=gin_files,
                      gin_bindings=gin_bindings, workers=workers, dry_run=dry_run)


def main(argv: Sequence[str] | None = None) -> None:
  """Runs the gin-configured ``run_privacy_sweep`` or ``run_key_tokens_sweep``."""
  from cdc_jax import config_cli

  args, overrides = config_cli.parse_sweep_flags(
      argv, description=__doc__.split("\n")[0], add_arguments=lambda parser: parser.add_argument(
          "--sweep", choices=("privacy", "key_tokens"), default="privacy"))
  name = "run_privacy_sweep" if args.sweep == "privacy" else "run_key_tokens_sweep"
  config_cli.configured("cdc_jax.contribution.variants", name)(**overrides)


if __name__ == "__main__":
  main()
