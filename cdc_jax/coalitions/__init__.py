"""Coalition experiments: sweeps, the results table, incentives and cooperative games.

Modules: ``experiment`` (one coalition run), ``sweep`` (the grid), ``runner``
(runs a sweep directory's runs and writes its tables; shared by sweeps and
withdrawal), ``results`` and ``examples`` (what runs wrote), ``bootstrap`` and
``analysis`` (paired intervals), ``incentives`` and ``games``, ``tables``,
``report`` and ``figures`` (the report). Importing this package is light
(numpy only, no JAX): the analysis runs wherever the sweep's results are. See
docs/incentives.md for the formulas.
"""

from cdc_jax.coalitions.analysis import SettingAnalysis, analyse
from cdc_jax.coalitions.bootstrap import Bootstrap, Interval, Outcomes
from cdc_jax.coalitions.examples import ExampleOutcome, collect_examples, read_examples
from cdc_jax.coalitions.games import (
    CoreCheck,
    CoreLP,
    Game,
    ShapleyEstimate,
    all_coalitions,
    banzhaf_values,
    check_core,
    core_is_empty,
    game_from_accuracies,
    game_from_results,
    missing_coalitions,
    monte_carlo_shapley,
    shapley_values,
    solve_core_lp,
)
from cdc_jax.coalitions.incentives import (
    CoalitionRow,
    ProportionPoint,
    SeedAverage,
    Setting,
    altruistic_contribution,
    average_over_seeds,
    coalition_table,
    greedy_gain,
    individually_rational,
    macro_welfare,
    proportion_points,
    standalone,
    weighted_welfare,
    worst_off,
)
from cdc_jax.coalitions.results import (
    ResultError,
    RunResult,
    collect_results,
    load_sweep,
    read_results,
    write_result,
    write_results,
    write_results_csv,
)
