"""The paper's comparison (Kumar et al., 2024, Table 2 and its ablations), run over several seeds on one config.

    base               the base model, no training
    self_refine        the base model with a critique-then-revise second turn (prompts.self_refine)
    star               STaR on D: two-attempt traces wrong at attempt 1, right at attempt 2 (baselines.run_star)
    star_plus          STaR on D+: also the right -> right traces
    pair_sft           Pair-SFT on D: a wrong first attempt paired with a right one (baselines.run_pair_sft)
    pair_sft_plus      Pair-SFT on D+: also a right first attempt paired with a right one
    single_turn        RL on attempt 1 only (train.attempts=1): the paper's "without multi-turn training"
    stage2_no_shaping  direct multi-turn RL (stage1_steps=0, alpha=0): the paper's collapse case
    stage2_shaping     stage1_steps=0
    score              Stage I then Stage II
    score_star_stage2  Stage I, then STaR (on sft.dataset) in place of Stage II's REINFORCE

Every RL row gets the same number of steps (train.rounds x (stage1_steps + stage2_steps)); the supervised rows
get sft.rounds x sft.steps supervised steps. All start from the same base model and problems and are evaluated by
the same two-attempt evaluation. Each run lives under saved_models/<experiment.name>/<row>_seed<seed>/; finished
runs and evaluations are reused, so an interrupted experiment continues where it stopped; reuse is keyed on the
settings (settings.yaml in the experiment folder): the same folder with other settings is refused. Writes results.md /
results.json (mean and standard deviation over seeds, and every row against experiment.compare_to: the difference
of means with a 95% t interval over seeds, paired by seed) and curves.png.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
from pathlib import Path

import torch
from accelerate import PartialState

from score.baselines import run_pair_sft, run_star
from score.card import evaluate_with_card, train_with_card, write_run_card
from score.checkpoints import check_experiment
from score.config import SUPERVISED_ROWS, Config, ScoreError, resolve_path
from score.evaluate import Z95
from score.locks import hold_folder
from score.models import resolve_model_path

P_FIX = "p_t2_right_given_t1_wrong"  # None when nothing was wrong at t1: such a run is left out of its mean
METRICS = ("accuracy_t1", "accuracy_t2", "delta", "delta_i_to_c", P_FIX, "delta_c_to_i")
PAIRED_METRICS = ("accuracy_t1", "accuracy_t2", "delta", P_FIX)
LABELS = {
    "base": "Base model",
    "self_refine": "Self-Refine (prompted critique and revision)",
    "star": "STaR (D: wrong → right)",
    "star_plus": "STaR+ (D+: also right → right)",
    "pair_sft": "Pair-SFT (D: wrong, right)",
    "pair_sft_plus": "Pair-SFT+ (D+: also right, right)",
    "single_turn": "Without multi-turn training (RL on attempt 1)",
    "stage2_no_shaping": "Stage II only, no shaping (direct multi-turn RL)",
    "stage2_shaping": "Stage II only, with shaping",
    "score": "SCoRe (Stage I + Stage II)",
    "score_star_stage2": "SCoRe with STaR instead of REINFORCE in Stage II",
}
UNTRAINED = ("base", "self_refine")
STAR, PAIR_SFT = ("star", "star_plus"), ("pair_sft", "pair_sft_plus")
# 97.5% quantiles of Student's t by degrees of freedom (beyond 30: the normal quantile)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
T975.update({11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093})
T975.update({20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048})
T975.update({29: 2.045, 30: 2.042})


def row_config(cfg: Config, row: str, seed: int, folder: Path) -> Config:
    """The config of one trained row and seed: same total RL steps, stages, attempts and alpha as the row asks
    (score_star_stage2's RL part is its Stage I steps; the supervised rows use it for seeds and paths)."""
    run = copy.deepcopy(cfg)
    steps = cfg.train.rounds * (cfg.train.stage1_steps + cfg.train.stage2_steps)
    run.train.output_dir = str(folder)
    run.train.run_name = f"{row}_seed{seed}"
    run.train.seed = seed
    run.data.seed = seed
    run.train.resume = True
    run.eval.model = str(folder / run.train.run_name / "final")
    run.eval.compare = []
    if row == "score_star_stage2":
        run.train.run_name += "_stage1"
        run.train.rounds, run.train.stage1_steps, run.train.stage2_steps = (
            1,
            cfg.train.rounds * cfg.train.stage1_steps,
            0,
        )
    elif row != "score":
        run.train.rounds, run.train.stage1_steps, run.train.stage2_steps = 1, 0, steps
    if row in STAR + PAIR_SFT:  # the row names the dataset
        run.sft.dataset = "d_plus" if row.endswith("_plus") else "d"
    if row == "stage2_no_shaping":
        run.train.alpha = 0.0
    if row == "single_turn":
        run.train.attempts = 1
    return run


def untrained_config(cfg: Config, row: str, folder: Path) -> Config:
    """The evaluation config of base or self_refine: the base model, self_refine with its own second turn."""
    run = copy.deepcopy(cfg)
    run.train.output_dir, run.eval.model, run.eval.compare = str(folder), "base", []
    if row == "self_refine":
        run.prompts.correction = cfg.prompts.self_refine
        run.eval.name = "self_refine"
    return run


def run_row(cfg: Config, row: str, seed: int, folder: Path) -> Config:
    """Train one row for one seed (finished runs are reused); returns the config that evaluates it."""
    run = row_config(cfg, row, seed, folder)
    base = resolve_model_path(cfg.model.name, cfg.model.base_dir)
    if row in STAR:
        fine_tune(run_star, run, folder / run.train.run_name, base, "star")
    elif row in PAIR_SFT:
        fine_tune(run_pair_sft, run, folder / run.train.run_name, base, "pair_sft")
    elif row == "score_star_stage2":
        stage1 = train_with_card(run) / "final"
        fine_tune(run_star, run, folder / f"{row}_seed{seed}", stage1, "star")
    else:
        train_with_card(run)
    return run


def fine_tune(baseline, run: Config, root: Path, start: Path, method: str) -> None:
    """baseline(run, root, start) (run_star or run_pair_sft), and the card of a model it trained now (a finished
    one it reuses keeps its card)."""
    trained = not (root / "final" / "config.json").is_file()
    final = baseline(run, root, start)
    if trained:
        write_run_card(run, final, supervised=method, start=start)


def summarise(results: dict[str, list[dict]]) -> dict[str, dict]:
    """Mean and sample standard deviation of each paper metric over the seeds of a row (std None: fewer than two
    values, so no spread was measured)."""
    summary = {}
    for row, runs in results.items():
        summary[row] = {"seeds": len(runs)}
        for key in METRICS:
            values = [m[key] for m in runs if m.get(key) is not None]
            summary[row][key] = statistics.fmean(values) if values else None
            summary[row][f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
    return summary


def paired_difference(values: list[float | None], reference: list[float | None]) -> tuple[float, float, float]:
    """Mean of values[s] - reference[s] over seeds s with its 95% t interval (a single value stands for every
    seed, as an untrained row's does; seeds where either is None are left out). One seed has no interval (nan),
    none no mean."""
    seeds = max(len(values), len(reference))
    values = values * seeds if len(values) == 1 else values
    reference = reference * seeds if len(reference) == 1 else reference
    differences = [v - r for v, r in zip(values, reference, strict=True) if v is not None and r is not None]
    if not differences:
        return math.nan, math.nan, math.nan
    mean = statistics.fmean(differences)
    if len(differences) < 2:
        return mean, math.nan, math.nan
    half = T975.get(len(differences) - 1, Z95) * statistics.stdev(differences) / math.sqrt(len(differences))
    return mean, mean - half, mean + half


def paired_table(results: dict[str, list[dict]], reference: str) -> str:
    """Every row minus the reference row, per metric (percent points), paired by seed."""
    cells = " | ".join(("Accuracy@t1", "Accuracy@t2", "Δ(t1,t2)", "P(c@t2 ∣ i@t1)"))
    lines = [f"| Row − {LABELS[reference]} | {cells} | seeds |", "|---|---|---|---|---|---|"]
    for row, runs in results.items():
        if row == reference:
            continue
        parts = []
        for key in PAIRED_METRICS:
            mean, low, high = paired_difference([m[key] for m in runs], [m[key] for m in results[reference]])
            interval = "" if math.isnan(low) else f" [{100 * low:+.1f}, {100 * high:+.1f}]"
            parts.append("-" if math.isnan(mean) else f"{100 * mean:+.1f}{interval}")
        seeds = max(len(runs), len(results[reference]))
        lines.append(f"| {LABELS[row]} | {' | '.join(parts)} | {seeds} |")
    return "\n".join(lines)


def mean_and_spread(mean: float | None, std: float | None) -> str:
    """A table cell in percent: '52.6 ± 1.2', '52.6' where one value gave no spread, '-' where there was none."""
    if mean is None:
        return "-"
    return f"{100 * mean:.1f}" + ("" if std is None else f" ± {100 * std:.1f}")


def summary_table(summary: dict[str, dict]) -> str:
    columns = "Accuracy@t1 | Accuracy@t2 | Δ(t1,t2) | Δ i→c | P(c@t2 ∣ i@t1) | Δ c→i"
    header = f"| Method | {columns} | seeds |\n|---|---|---|---|---|---|---|---|"
    lines = [header]
    for row, s in summary.items():
        cells = " | ".join(mean_and_spread(s[k], s[f"{k}_std"]) for k in METRICS)
        lines.append(f"| {LABELS[row]} | {cells} | {s['seeds']} |")
    return "\n".join(lines)


def plot_curves(folder: Path, rows: list[str], seeds: list[int], path: Path) -> None:
    """Reward per attempt during training, mean over seeds, one panel per trained row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = [r for r in rows if r not in UNTRAINED]
    fig, axes = plt.subplots(1, len(trained), figsize=(4 * len(trained), 3.2), sharey=True, squeeze=False)
    for axis, row in zip(axes[0], trained, strict=True):
        runs = []
        for seed in seeds:
            lines = (folder / f"{row}_seed{seed}" / "metrics.jsonl").read_text().splitlines()
            runs.append([json.loads(line) for line in lines if "reward_t1" in line])
        steps = [r["step"] for r in runs[0]]
        for k in (k for k in (1, 2) if f"reward_t{k}" in runs[0][0]):
            mean = [statistics.fmean(run[i][f"reward_t{k}"] for run in runs) for i in range(len(steps))]
            axis.plot(steps, mean, label=f"attempt {k}")
        axis.set(title=LABELS[row], xlabel="step")
        axis.title.set_fontsize(8)
    axes[0][0].set_ylabel("reward of sampled attempts (mean over seeds)")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_experiment(cfg: Config) -> Path:
    """Train and evaluate every row of cfg.experiment for every seed; returns the experiment folder."""
    name, seeds, rows = cfg.experiment.name, cfg.experiment.seeds, cfg.experiment.rows
    folder = resolve_path(cfg.train.output_dir) / name
    state = PartialState(cpu=not torch.cuda.is_available())
    supervised = [row for row in rows if row in SUPERVISED_ROWS]  # baselines.py: one process
    if supervised and state.num_processes > 1:
        raise ScoreError(
            f"experiment.rows {supervised} fine-tune in one process; run them without a multi-process launcher "
            f"(this launch has {state.num_processes} processes)"
        )
    if supervised and cfg.model.lora_rank:
        raise ScoreError(
            f"experiment.rows {supervised} fine-tune every weight (model.lora_rank applies to the RL rows only); "
            "drop those rows or set model.lora_rank=0"
        )
    if len(rows) > 1 and cfg.experiment.compare_to not in rows:
        raise ScoreError(
            f"experiment.compare_to={cfg.experiment.compare_to} is not one of experiment.rows ({', '.join(rows)}), "
            "so no row would be compared with it; add it to the rows or name one of them"
        )
    hold_folder(folder / ".lock", "experiment.name", state.is_main_process)
    check_experiment(folder, cfg, state.is_main_process)
    results: dict[str, list[dict]] = {}
    for row in rows:
        if row in UNTRAINED:  # greedy evaluation of the base model: the same for every seed
            print(f"experiment {name}: {LABELS[row]}")
            results[row] = [
                json.loads((evaluate_with_card(untrained_config(cfg, row, folder)) / "metrics.json").read_text())
            ]
            continue
        results[row] = []
        for seed in seeds:
            print(f"experiment {name}: {LABELS[row]}, seed {seed}")
            run = run_row(cfg, row, seed, folder)
            results[row].append(json.loads((evaluate_with_card(run) / "metrics.json").read_text()))
    summary = summarise(results)
    table = summary_table(summary)
    report = (
        f"# Experiment {name}\n\nMean ± standard deviation over seeds {seeds} (a row with one value, such as the "
        f"untrained rows, shows it alone: no spread was measured).\n\n{table}\n"
    )
    reference = cfg.experiment.compare_to
    if reference in results and len(results) > 1 and len(seeds) > 1:
        paired = paired_table(results, reference)
        report += (
            f"\nEach row minus {LABELS[reference]}, percent points: mean difference over seeds, paired by seed, "
            f"[95% t interval]. An untrained row's single value stands for every seed.\n\n{paired}\n"
        )
        table += "\n\n" + paired
    (folder / "results.json").write_text(json.dumps({"summary": summary, "runs": results}, indent=2))
    (folder / "results.md").write_text(report)
    if any(r not in UNTRAINED for r in rows):
        plot_curves(folder, rows, seeds, folder / "curves.png")
    print(table)
    print(f"results: {folder / 'results.md'}")
    return folder
