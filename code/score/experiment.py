"""The paper's central comparison, run over several seeds on one config:

    base model            no training
    Stage II, no shaping  direct multi-turn RL (stage1_steps=0, alpha=0): the paper's collapse case
    Stage II, shaping     stage1_steps=0
    SCoRe                 Stage I then Stage II

Every trained row gets the same number of steps. Each run is an ordinary `--task train` run followed by
`--task evaluate`, under saved_models/<experiment.name>/; finished runs and evaluations are reused, so an
interrupted experiment continues where it stopped. Writes results.md / results.json (mean and standard
deviation over seeds) and curves.png.
"""

from __future__ import annotations

import copy
import json
import statistics
from pathlib import Path

from score.config import Config, resolve_path
from score.evaluate import evaluate
from score.trainer import train

METRICS = ("accuracy_t1", "accuracy_t2", "delta", "delta_i_to_c", "delta_c_to_i")
LABELS = {
    "base": "Base model",
    "stage2_no_shaping": "Stage II only, no shaping (direct multi-turn RL)",
    "stage2_shaping": "Stage II only, with shaping",
    "score": "SCoRe (Stage I + Stage II)",
}


def row_config(cfg: Config, row: str, seed: int, folder: Path) -> Config:
    """The config of one trained row and seed: same total steps, stages and alpha as the row asks."""
    run = copy.deepcopy(cfg)
    steps = cfg.train.rounds * (cfg.train.stage1_steps + cfg.train.stage2_steps)
    run.train.output_dir = str(folder)
    run.train.run_name = f"{row}_seed{seed}"
    run.train.seed = seed
    run.data.seed = seed
    run.train.resume = True
    run.eval.model = ""
    run.eval.compare = []
    if row != "score":
        run.train.rounds, run.train.stage1_steps, run.train.stage2_steps = 1, 0, steps
    if row == "stage2_no_shaping":
        run.train.alpha = 0.0
    return run


def summarise(results: dict[str, list[dict]]) -> dict[str, dict]:
    """Mean and sample standard deviation of each paper metric over the seeds of a row."""
    summary = {}
    for row, runs in results.items():
        summary[row] = {"seeds": len(runs)}
        for key in METRICS:
            values = [m[key] for m in runs]
            summary[row][key] = statistics.fmean(values)
            summary[row][f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return summary


def summary_table(summary: dict[str, dict]) -> str:
    header = "| Method | Accuracy@t1 | Accuracy@t2 | Δ(t1,t2) | Δ i→c | Δ c→i | seeds |\n|---|---|---|---|---|---|---|"
    lines = [header]
    for row, s in summary.items():
        cells = " | ".join(f"{100 * s[k]:.1f} ± {100 * s[k + '_std']:.1f}" for k in METRICS)
        lines.append(f"| {LABELS[row]} | {cells} | {s['seeds']} |")
    return "\n".join(lines)


def plot_curves(folder: Path, rows: list[str], seeds: list[int], path: Path) -> None:
    """Reward per attempt during training, mean over seeds, one panel per trained row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = [r for r in rows if r != "base"]
    fig, axes = plt.subplots(1, len(trained), figsize=(4 * len(trained), 3.2), sharey=True, squeeze=False)
    for axis, row in zip(axes[0], trained, strict=True):
        runs = []
        for seed in seeds:
            lines = (folder / f"{row}_seed{seed}" / "metrics.jsonl").read_text().splitlines()
            runs.append([json.loads(line) for line in lines if "reward_t1" in line])
        steps = [r["step"] for r in runs[0]]
        for k in (1, 2):
            mean = [statistics.fmean(run[i][f"reward_t{k}"] for run in runs) for i in range(len(steps))]
            axis.plot(steps, mean, label=f"attempt {k}")
        axis.set(title=LABELS[row], xlabel="step")
        axis.title.set_fontsize(8)
    axes[0][0].set_ylabel("training reward (mean over seeds)")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_experiment(cfg: Config) -> Path:
    """Train and evaluate every row of cfg.experiment for every seed; returns the experiment folder."""
    name, seeds, rows = cfg.experiment.name, cfg.experiment.seeds, cfg.experiment.rows
    folder = resolve_path(cfg.train.output_dir) / name
    results: dict[str, list[dict]] = {}
    if "base" in rows:
        base = copy.deepcopy(cfg)
        base.train.output_dir, base.eval.model, base.eval.compare = str(folder), "base", []
        results["base"] = [json.loads((evaluate(base) / "metrics.json").read_text())]
    for row in rows:
        if row == "base":
            continue
        results[row] = []
        for seed in seeds:
            run = row_config(cfg, row, seed, folder)
            print(f"experiment {name}: {LABELS[row]}, seed {seed}")
            train(run)
            results[row].append(json.loads((evaluate(run) / "metrics.json").read_text()))
    summary = summarise(results)
    table = summary_table(summary)
    (folder / "results.json").write_text(json.dumps({"summary": summary, "runs": results}, indent=2))
    (folder / "results.md").write_text(f"# Experiment {name}\n\nMean ± standard deviation over seeds.\n\n{table}\n")
    if any(r != "base" for r in rows):
        plot_curves(folder, rows, seeds, folder / "curves.png")
    print(table)
    print(f"results: {folder / 'results.md'}")
    return folder
