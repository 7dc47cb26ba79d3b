"""Choosing the CPU testbed's settings on held-out training problems, never on the test problems (issue 19).

    .venv/bin/python bench/testbed_sweep.py --seeds 0 1 2 --point defaults --point lr5e-5 train.lr=5e-5

Each --point is a NAME and the --set overrides it applies to --config (none: the config as it is). Every point
and seed trains one --row run (experiment.row_config: score by default) holding out train.eval_problems training
problems, evaluated greedily every train.eval_every steps (metrics.jsonl); the test problems are not read. Runs
live under saved_models/<--name>/<point>_seed<seed>/ and finished ones are reused, so processes given different
points can share a sweep and a last call with every point prints the table: the held-out metrics of the last
evaluation of each finished run, mean over seeds, with the number of seeds whose Δ(t1,t2) is above 0. --table-only
trains nothing; --curves also prints each run's held-out evaluations step by step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from score.config import load_config, resolve_path  # noqa: E402
from score.experiment import P_FIX, row_config  # noqa: E402
from score.logs import heldout_table  # noqa: E402
from score.trainer import train  # noqa: E402

RL_ROWS = ("score", "stage2_no_shaping", "stage2_shaping", "single_turn")
COLUMNS = {"accuracy_t1": "t1", "accuracy_t2": "t2", "delta": "Δ", "delta_i_to_c": "Δ i→c", "delta_c_to_i": "Δ c→i"}


def heldout_evaluations(metrics_file: Path) -> list[dict[str, float]]:
    """Every held-out evaluation a run logged, in step order (keys without the prefix, and step)."""
    columns, rows = heldout_table(metrics_file)
    return [dict(zip(columns, row, strict=True)) for row in rows]


def curve_line(evaluations: list[dict[str, float]]) -> str:
    """A run's held-out evaluations as 'step: t1/t2 c→i P(fix)' in percent, to see when attempt 2 learns."""
    cells = [
        f"{e['step']}: {100 * e['accuracy_t1']:.0f}/{100 * e['accuracy_t2']:.0f} "
        f"{100 * e['delta_c_to_i']:.0f} {100 * (e[P_FIX] or 0):.0f}"
        for e in evaluations
    ]
    return "; ".join(cells)


def sweep_table(results: dict[str, list[dict[str, float]]]) -> str:
    """One line per point: each held-out metric's mean over seeds in percent, and the seeds with Δ > 0."""
    lines = [f"| Point | {' | '.join(COLUMNS.values())} | Δ > 0 |", "|---" * (len(COLUMNS) + 2) + "|"]
    for point, runs in results.items():
        cells = [f"{100 * statistics.fmean(r[key] for r in runs):.1f}" for key in COLUMNS]
        positive = sum(r["delta"] > 0 for r in runs)
        lines.append(f"| {point} | {' | '.join(cells)} | {positive}/{len(runs)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/testbed.yaml")
    parser.add_argument("--point", nargs="+", action="append", required=True, metavar=("NAME", "SETTING"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--row", choices=RL_ROWS, default="score")
    parser.add_argument("--name", default="testbed-sweep", help="folder under train.output_dir")
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--table-only", action="store_true", help="print the table of finished runs")
    parser.add_argument("--curves", action="store_true", help="also print every held-out evaluation of each run")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {}
    for name, *settings in args.point:
        cfg = load_config(args.config, [f"train.eval_every={args.eval_every}", *settings])
        folder = resolve_path(cfg.train.output_dir) / args.name
        results[name] = []
        for seed in args.seeds:
            run = row_config(cfg, args.row, seed, folder)
            run.train.run_name = f"{name}_seed{seed}"
            root = folder / run.train.run_name
            if not args.table_only:
                print(f"sweep: {name} seed {seed} {' '.join(settings)}", flush=True)
                train(run)
            if (root / "final").is_dir():  # a run still training (another process) is left out
                evaluations = heldout_evaluations(root / "metrics.jsonl")
                results[name].append(evaluations[-1])
                if args.curves:
                    print(f"{name} seed {seed} (step: t1/t2 c→i P(c@t2|i@t1)) {curve_line(evaluations)}")
        if not results[name]:
            del results[name]
    print(sweep_table(results))


if __name__ == "__main__":
    main()
