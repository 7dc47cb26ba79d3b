"""Two-attempt evaluation with the paper's metrics (Kumar et al., 2024, section 3).

Writes <run>/eval/<name>/: generations.jsonl (one line per problem, appended as batches finish, so an
interrupted evaluation resumes), metrics.json, results.md, and plots. settings.json records what the generations
depend on (the model's files by content, engine, dtype, eval settings, prompts, problems): a rerun reuses them only
when all of it matches; when only the model's files changed it evaluates again (the old folder is kept aside).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import AutoConfig, AutoTokenizer

from score.checkpoints import writing
from score.config import Config, ScoreError, resolve_path
from score.data import MissingSplit, Problem, load_math
from score.diagnostics import two_attempt_diagnostics
from score.distributed import gather_objects, my_share
from score.domains import final_answer, grading_reward
from score.engines import open_engine, resolve_engine_name
from score.guards import check_context
from score.locks import hold_folder
from score.models import adapter_base, is_model_folder, load_model, resolve_model_path
from score.progress import progress
from score.provenance import data_sha256, model_files_sha256, sha256_of, shortened
from score.rollout import generate_rollouts
from score.scaling import plot_scaling, sampled_metrics, scaling_markdown

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (well behaved near 0 and 1, unlike the normal one)."""
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_interval(differences: list[int]) -> tuple[float, float]:
    """95% normal interval of the mean of per-problem differences (correct@t2 - correct@t1 in {-1, 0, 1})."""
    n = len(differences)
    if n < 2:
        return (float(differences[0]),) * 2 if differences else (0.0, 0.0)
    mean = sum(differences) / n
    variance = sum((d - mean) ** 2 for d in differences) / (n - 1)
    half = Z95 * math.sqrt(variance / n)
    return mean - half, mean + half


def compute_metrics(records: list[dict]) -> dict:
    """Paper metrics from generation records (each with `attempts`: a list of {correct, answer, ...}).

    accuracy_t{k}: fraction correct at attempt k; delta = accuracy_t2 - accuracy_t1; delta_i_to_c: fraction
    of problems wrong at t1 and right at t2; delta_c_to_i: right at t1 and wrong at t2. Fractions of n.
    With two or more attempts, also the self-correction diagnostics of attempts 1 and 2 (see diagnostics.py).
    """
    n = len(records)
    attempts = min((len(r["attempts"]) for r in records), default=0)
    correct = [[bool(r["attempts"][k]["correct"]) for r in records] for k in range(attempts)]
    metrics: dict = {"n": n, "attempts": attempts}
    for k in range(attempts):
        hits = sum(correct[k])
        metrics[f"accuracy_t{k + 1}"] = hits / n if n else 0.0
        metrics[f"accuracy_t{k + 1}_ci95"] = wilson_interval(hits, n)
        metrics[f"no_answer_t{k + 1}"] = sum(r["attempts"][k]["answer"] is None for r in records)
    for k in range(1, attempts):
        before, after = correct[k - 1], correct[k]
        suffix = "" if k == 1 else f"_t{k}_t{k + 1}"
        i_to_c = sum(not a and b for a, b in zip(before, after, strict=True))
        c_to_i = sum(a and not b for a, b in zip(before, after, strict=True))
        metrics[f"delta{suffix}"] = (sum(after) - sum(before)) / n if n else 0.0
        metrics[f"delta{suffix}_ci95"] = paired_interval([int(b) - int(a) for a, b in zip(before, after, strict=True)])
        metrics[f"delta_i_to_c{suffix}"] = i_to_c / n if n else 0.0
        metrics[f"delta_i_to_c{suffix}_ci95"] = wilson_interval(i_to_c, n)
        metrics[f"delta_c_to_i{suffix}"] = c_to_i / n if n else 0.0
        metrics[f"delta_c_to_i{suffix}_ci95"] = wilson_interval(c_to_i, n)
    if attempts >= 2:
        first_two = [r["attempts"][:2] for r in records]
        metrics.update(
            two_attempt_diagnostics(
                correct=[(a["correct"], b["correct"]) for a, b in first_two],
                answers=[(a["answer"], b["answer"]) for a, b in first_two],
                texts=[(a["text"], b["text"]) for a, b in first_two],
            )
        )
    return metrics


def grouped_metrics(records: list[dict], key: str) -> dict:
    groups: dict = {}
    for record in records:
        groups.setdefault(str(record[key]), []).append(record)
    return {name: compute_metrics(rows) for name, rows in sorted(groups.items())}


TABLE_METRICS = ("accuracy_t1", "accuracy_t2", "delta", "delta_i_to_c", "p_t2_right_given_t1_wrong", "delta_c_to_i")
TABLE_HEADER = "Accuracy@t1 | Accuracy@t2 | Δ(t1,t2) | Δ i→c | P(c@t2 ∣ i@t1) | Δ c→i"


def table_row(label: str, metrics: dict) -> str:
    cells = [metrics.get(k) for k in TABLE_METRICS]
    text = " | ".join("-" if v is None else f"{100 * v:.1f}" for v in cells)
    return f"| {label} | {text} | {metrics['n']} |"


def results_table(rows: list[tuple[str, dict]]) -> str:
    """The paper's table (percent): Accuracy@t1, Accuracy@t2, Delta(t1,t2), Delta i->c, Delta c->i, and
    P(right at t2 | wrong at t1) beside Delta i->c (a model right 98% of the time at t1 has almost nothing left
    to correct)."""
    header = f"| Model | {TABLE_HEADER} | n |\n|---|---|---|---|---|---|---|---|"
    return "\n".join([header] + [table_row(label, metrics) for label, metrics in rows])


def results_markdown(label: str, metrics: dict, compare: list[tuple[str, dict]]) -> str:
    lines = [f"# Evaluation: {label}", "", results_table(compare + [(label, metrics)]), ""]
    if metrics["attempts"] > 2:
        accs = ", ".join(f"t{k}: {100 * metrics[f'accuracy_t{k}']:.1f}" for k in range(1, metrics["attempts"] + 1))
        lines += [f"Accuracy after each attempt (%): {accs}", ""]
    lines += ["95% intervals (percent):", ""]
    for key in TABLE_METRICS:
        if f"{key}_ci95" in metrics:
            low, high = metrics[f"{key}_ci95"]
            lines.append(f"- {key}: {100 * metrics[key]:.1f} [{100 * low:.1f}, {100 * high:.1f}]")
    no_answer = ", ".join(f"t{k}: {metrics[f'no_answer_t{k}']}" for k in range(1, metrics["attempts"] + 1))
    lines += ["", f"Problems with no extractable answer (counted wrong): {no_answer}", ""]
    if metrics["attempts"] >= 2:
        lines += ["Self-correction diagnostics (attempt 1 -> attempt 2):", "", *diagnostic_lines(metrics), ""]
    for key, title in (("by_subject", "By subject"), ("by_level", "By level")):
        lines += [f"## {title}", "", results_table(list(metrics[key].items())), ""]
    if "sampled" in metrics:
        lines += [scaling_markdown(metrics["sampled"])]
    return "\n".join(lines)


def diagnostic_lines(metrics: dict) -> list[str]:
    def percent(key: str) -> str:
        return "-" if metrics[key] is None else f"{100 * metrics[key]:.1f}%"

    return [
        f"- P(right at t2 | wrong at t1): {percent('p_t2_right_given_t1_wrong')}",
        f"- P(wrong at t2 | right at t1): {percent('p_t2_wrong_given_t1_right')}",
        f"- second attempts whose final answer differs from the first: {percent('answer_changed')}",
        f"- mean edit distance between attempts (word-level Levenshtein / longer attempt): "
        f"{metrics['edit_distance']:.3f}",
    ]


def plot_accuracy(metrics: dict, path: Path) -> None:
    """Accuracy per attempt, with the i->c and c->i transition bars between consecutive attempts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = metrics["attempts"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    accs = [100 * metrics[f"accuracy_t{i}"] for i in range(1, k + 1)]
    left.plot(range(1, k + 1), accs, marker="o")
    left.set(xlabel="attempt", ylabel="accuracy (%)", title="Accuracy per attempt", xticks=range(1, k + 1))
    labels, i_to_c, c_to_i = [], [], []
    for i in range(1, k):
        suffix = "" if i == 1 else f"_t{i}_t{i + 1}"
        labels.append(f"t{i}→t{i + 1}")
        i_to_c.append(100 * metrics[f"delta_i_to_c{suffix}"])
        c_to_i.append(100 * metrics[f"delta_c_to_i{suffix}"])
    x = range(len(labels))
    right.bar([i - 0.2 for i in x], i_to_c, width=0.4, label="incorrect→correct", color="tab:green")
    right.bar([i + 0.2 for i in x], c_to_i, width=0.4, label="correct→incorrect", color="tab:red")
    right.set(xticks=list(x), xticklabels=labels, ylabel="% of problems", title="Transitions")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training(metrics_jsonl: Path, path: Path) -> bool:
    """Training curves of a run: reward and KL per attempt against the step (Stage I shaded), and the held-out
    accuracy per attempt when the run evaluated held-out problems (train.eval_every)."""
    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    heldout = [r for r in rows if "heldout_accuracy_t1" in r]
    rows = [r for r in rows if "reward_t1" in r]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    panels = [("reward", "reward"), ("kl", "kl")] + ([("heldout_accuracy", "held-out accuracy")] if heldout else [])
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 3 * len(panels)), sharex=True)
    for (key, label), axis in zip(panels, axes, strict=True):
        source = heldout if key == "heldout_accuracy" else rows
        for k in (1, 2):
            if f"{key}_t{k}" in source[0]:
                marker = "o" if key == "heldout_accuracy" else None
                axis.plot([r["step"] for r in source], [r[f"{key}_t{k}"] for r in source], marker=marker)
                axis.lines[-1].set_label(f"attempt {k}")
        axis.set_ylabel(label)
        if axis.lines:
            axis.legend()
    for r in rows:
        if r["stage"] == 1:
            for axis in axes:
                axis.axvspan(r["step"] - 1, r["step"], color="0.9", lw=0)
    axes[0].set_title("Training (shaded: Stage I)")
    axes[-1].set_xlabel("step")
    axes[-1].set_xlim(min(steps[0] - 1, heldout[0]["step"] if heldout else steps[0]), steps[-1])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def config_run_model(cfg: Config) -> Path:
    """The final model of the run this config trains (not the newest run: in a sweep that is another job's)."""
    final = resolve_path(cfg.train.output_dir) / cfg.train.run_name / "final"
    if not is_model_folder(final):
        raise ScoreError(
            f"no trained model at {final}; train first (same config), or set eval.model to a model folder "
            "(eval.model=base evaluates the base model)"
        )
    return final


def choose_model(cfg: Config) -> tuple[Path, Path]:
    """(model folder, evaluation root). A run's models keep their evaluations in <run>/eval/."""
    if cfg.eval.model == "base":
        model = resolve_model_path(cfg.model.name, cfg.model.base_dir)
    elif cfg.eval.model:
        model = resolve_model_path(cfg.eval.model, cfg.model.base_dir)
    else:
        model = config_run_model(cfg)
    output = resolve_path(cfg.train.output_dir)
    if model.is_relative_to(output) and model != output:
        # the run that holds the model (<run>/final, <run>/stage_ends/...), also inside an experiment folder
        runs = [folder for folder in model.parents if folder.is_relative_to(output) and folder != output]
        run = next((folder for folder in runs if (folder / "metrics.jsonl").is_file()), runs[-1] if runs else model)
        inside = model.relative_to(run).parts
        if inside and inside != ("final",):  # a stage-end model: its own folder, not the final model's evaluations
            return model, run / "eval" / "-".join(inside)
        return model, run / "eval"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model.name)
    return model, output / f"base-{slug}" / "eval"


def load_test_problems(cfg: Config) -> tuple[list[Problem], str]:
    """eval.source, else data.source's own test split (never the training problems of a single-split source)."""
    source = cfg.eval.source or cfg.data.source
    try:
        problems = load_math(
            source,
            split="test",
            scheme=cfg.data.scheme,
            subjects=cfg.data.subjects or None,
            levels=cfg.data.levels or None,
            limit=cfg.eval.max_problems or None,
            math500_ids=resolve_path(cfg.data.math500_ids),
            separate_split=not cfg.eval.source,
        )
    except MissingSplit as e:
        raise ScoreError(
            f"eval.source is empty and data.source {e}: evaluating on it would test on the training problems; "
            "set eval.source to the test problems"
        ) from None
    if not problems:
        filters = " after the data.subjects/data.levels filters" if cfg.data.subjects or cfg.data.levels else ""
        raise ScoreError(f"no test problems in {source}{filters}")
    stem = Path(source).stem if Path(source).suffix else f"{Path(source).name}_{cfg.data.scheme}_test"
    return problems, stem


def evaluation_dtype(device: torch.device) -> torch.dtype:
    """bf16 on a GPU; fp32 on a CPU, where bf16 matmuls are slow and round differently."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def settings_fingerprint(
    cfg: Config, model: Path, files_sha256: str, dtype: torch.dtype, problems: list[Problem]
) -> dict:
    """Everything the generations depend on, by setting name; a rerun reuses generations only when all of it matches.
    (eval.batch_size and the number of processes are left out: padding moves logits only by rounding.)"""
    engine = resolve_engine_name(cfg.rollout.engine)
    return {
        "model": str(model),
        "model_files_sha256": files_sha256,
        "rollout.engine": engine,
        "rollout.hf_compile": cfg.rollout.hf_compile if engine == "hf" else None,
        "dtype": str(dtype).removeprefix("torch."),
        "model.attn_implementation": cfg.model.attn_implementation,
        "eval.attempts": cfg.eval.attempts,
        "eval.temperature": cfg.eval.temperature,
        "rollout.top_p": cfg.rollout.top_p if cfg.eval.temperature else None,  # used only when sampling
        "eval.max_new_tokens": cfg.eval.max_new_tokens,
        "prompts_sha256": sha256_of(vars(cfg.prompts)),
        "problems_sha256": data_sha256(problems),  # gold answers and tests too
        "grader.extraction": cfg.grader.extraction,  # which answers count as given
    }


def samples_fingerprint(cfg: Config) -> dict:
    """What the sampled conversations depend on beyond settings_fingerprint (which samples greedily or at
    eval.temperature): how many, and how they are drawn."""
    return {
        "eval.samples": cfg.eval.samples,
        "eval.sample_temperature": cfg.eval.sample_temperature,
        "eval.seed": cfg.eval.seed,
        "rollout.top_p": cfg.rollout.top_p,
    }


def changed_settings(path: Path, current: dict) -> dict[str, str]:
    """{name: 'old -> new'} for every setting recorded in `path` (if it exists) that differs from `current`
    (hashes shortened to 12 characters)."""
    if not path.exists():
        return {}
    try:
        recorded = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ScoreError(f"{path} is damaged (not JSON); remove its folder to evaluate again") from None

    names = sorted(recorded.keys() | current.keys())
    return {
        k: f"{shortened(recorded.get(k))} -> {shortened(current.get(k))}"
        for k in names
        if recorded.get(k) != current.get(k)
    }


def settings_change_error(folder: Path, what: str, changed: dict[str, str]) -> ScoreError:
    changes = ", ".join(f"{name} {values}" for name, values in changed.items())
    return ScoreError(f"{folder} holds {what} with other settings ({changes}); choose another eval.name")


def read_generations(path: Path) -> dict[str, dict]:
    done = {}
    lines = path.read_text().splitlines() if path.exists() else []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            done[record["id"]] = record
        except (json.JSONDecodeError, KeyError, TypeError):
            if number == len(lines):
                break  # a last line cut short by an interruption: that problem is redone
            raise ScoreError(f"{path}:{number}: malformed generation record") from None
    return done


def evaluate(cfg: Config) -> Path:
    """Evaluate a model with K sequential attempts; returns the evaluation folder.

    Under `accelerate launch` the problems are split over the processes, each generates its share with its own
    copy of the model, and the main process writes every record (the same records as one process writes)."""
    # PartialState: the processes, without fixing the mixed precision a later training in this process sets.
    accelerator = PartialState(cpu=not torch.cuda.is_available())
    main = accelerator.is_main_process
    if accelerator.num_processes > 1 and cfg.eval.samples > 1:
        raise ScoreError("eval.samples > 1 (sampled evaluation) runs in one process; start it without a launcher")
    model_path, eval_root = choose_model(cfg)
    problems, stem = load_test_problems(cfg)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model_config = AutoConfig.from_pretrained(adapter_base(model_path) or model_path)  # a LoRA adapter: its base's
    check_context(tokenizer, model_config, problems, cfg, evaluating=True, training=False)
    greedy = cfg.eval.temperature == 0
    name = cfg.eval.name or f"{stem}_k{cfg.eval.attempts}" + ("" if greedy else f"_t{cfg.eval.temperature:g}")
    out = eval_root / name
    with writing(eval_root):
        hold_folder(eval_root / f".{name}.lock", "eval.name", main)  # beside: a stale evaluation is moved aside
    dtype = evaluation_dtype(accelerator.device)
    (files_sha256,) = gather_objects([model_files_sha256(model_path)] if main else [])  # read once, by one process
    fingerprint = settings_fingerprint(cfg, model_path, files_sha256, dtype, problems)
    settings = out / "settings.json"
    changed = changed_settings(settings, fingerprint)
    if changed.keys() - {"model_files_sha256"}:
        raise settings_change_error(out, "an evaluation", changed)
    if changed and main:  # the same model folder with other files (trained further): its old results are stale
        aside = out.with_name(f"{out.name}.superseded-{datetime.now(UTC):%Y%m%dT%H%M%S%f}")
        out.rename(aside)
        print(f"evaluate: the files of {model_path} changed since {out} was written: evaluating again (old: {aside})")
    accelerator.wait_for_everyone()  # the main process has moved a superseded evaluation aside
    generations = out / "generations.jsonl"
    done = read_generations(generations)
    accelerator.wait_for_everyone()  # every process has read the files before the main process writes
    if main:
        with writing(out):
            out.mkdir(parents=True, exist_ok=True)
            settings.write_text(json.dumps(fingerprint, indent=2))
            text = generations.read_text() if generations.exists() else ""
            if not text.endswith("\n"):  # drop a last line cut short by an interruption before appending
                generations.write_text(text[: text.rfind("\n") + 1])

    todo = [p for p in problems if p.id not in done]
    model = ModelOnDemand(cfg, model_path, accelerator.device, dtype, tokenizer)
    if todo:
        if main:
            print(f"evaluating {model_path} on {len(todo)} problems ({len(done)} already done) -> {out}")
        with (
            writing(out),  # a full disk: one line; the run resumes from the whole lines once there is space
            progress(total=len(problems), initial=len(done), desc="evaluate", disable=not main) as bar,
            generations.open("a") if main else nullcontext() as f,
        ):
            for batch in shared_records(accelerator, model, todo, cfg):
                for record in batch:
                    done[record["id"]] = record
                if main:
                    f.writelines(json.dumps(record) + "\n" for record in batch)
                    f.flush()
                    correct = sum(r["attempts"][0]["correct"] for r in done.values())  # so far, not this batch's
                    bar.set_postfix(acc_t1=f"{correct / len(done):.3f}", refresh=False)
                    bar.update(len(batch))
    if not main:
        model.close()
        return out

    records = [done[p.id] for p in problems]
    metrics = compute_metrics(records)
    metrics["by_subject"] = grouped_metrics(records, "subject")
    metrics["by_level"] = grouped_metrics(records, "level")
    metrics["model"] = str(model_path)
    if cfg.eval.samples > 1:
        metrics["sampled"] = evaluate_sampled(cfg, model, problems, out)
        plot_scaling(metrics["sampled"], out / "scaling.png")
    label = f"{model_path.parent.name}/{model_path.name}"
    compare = [compare_row(resolve_path(d)) for d in cfg.eval.compare]
    with writing(out):
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (out / "results.md").write_text(results_markdown(label, metrics, compare))
        plot_accuracy(metrics, out / "accuracy.png")
        run_metrics = eval_root.parent / "metrics.jsonl"
        if run_metrics.exists():
            plot_training(run_metrics, out / "training.png")
    model.close()
    print(results_table(compare + [(label, metrics)]))
    if "sampled" in metrics:
        print(scaling_markdown(metrics["sampled"]))
    print(f"results: {out / 'results.md'}")
    return out


class ModelOnDemand:
    """The evaluated model's engine (rollout.engine) with its tokenizer, opened the first time generation needs it
    (a finished evaluation only recomputes its metrics)."""

    def __init__(self, cfg: Config, path: Path, device: torch.device, dtype: torch.dtype, tokenizer):
        self.cfg, self.path, self.device, self.dtype, self.tokenizer = cfg, path, device, dtype, tokenizer
        self.loaded = None

    def get(self) -> tuple:
        if self.loaded is None:
            hf = resolve_engine_name(self.cfg.rollout.engine) == "hf"
            model = load_model(self.path, self.cfg.model, self.dtype).to(self.device).eval() if hf else None
            engine = open_engine(self.cfg.rollout, self.path, seed=self.cfg.eval.seed, dtype=self.dtype, model=model)
            self.loaded = (engine, self.tokenizer)
        return self.loaded

    def close(self) -> None:
        if self.loaded is not None:
            self.loaded[0].close()
            self.loaded = None


def evaluate_sampled(cfg: Config, model: ModelOnDemand, problems: list[Problem], out: Path) -> dict:
    """eval.samples conversations per problem at eval.sample_temperature, seeded per batch, appended to
    samples.jsonl as batches finish (resumable); returns scaling.sampled_metrics of them."""
    n = cfg.eval.samples
    fingerprint = samples_fingerprint(cfg)
    settings = out / "samples_settings.json"
    changed = changed_settings(settings, fingerprint)
    if changed:
        raise settings_change_error(out, "sampled conversations", changed)
    settings.write_text(json.dumps(fingerprint))
    path = out / "samples.jsonl"
    done = read_generations(path)
    todo = [p for p in problems if p.id not in done]
    per_batch = max(1, cfg.eval.batch_size // n)
    with (
        writing(out),
        progress(total=len(problems), initial=len(problems) - len(todo), desc=f"sample x{n}") as bar,
        path.open("a") as f,
    ):
        for start in range(0, len(todo), per_batch):
            batch, statuses = todo[start : start + per_batch], {}
            devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(cfg.eval.seed * 1_000_003 + start)
                rollout = generate_rollouts(
                    *model.get(),
                    batch,
                    cfg.rollout,
                    cfg.prompts,
                    attempts=cfg.eval.attempts,
                    samples_per_prompt=n,
                    temperature=cfg.eval.sample_temperature,
                    max_new_tokens=cfg.eval.max_new_tokens,
                    batch_size=cfg.eval.batch_size,
                    reward_fn=grading_reward(cfg.grader, statuses),
                )
            for i, problem in enumerate(batch):
                rows = range(i * n, (i + 1) * n)
                extraction = cfg.grader.extraction
                samples = [generation_record(problem, rollout, r, extraction, statuses)["attempts"] for r in rows]
                done[problem.id] = {"id": problem.id, "samples": samples}
                f.write(json.dumps(done[problem.id]) + "\n")
            f.flush()
            bar.update(len(batch))
    metrics = sampled_metrics(
        [done[p.id]["samples"] for p in problems], cfg.grader.timeout, [p.domain for p in problems]
    )
    metrics.update(temperature=cfg.eval.sample_temperature, seed=cfg.eval.seed)
    return metrics


def compare_row(folder: Path) -> tuple[str, dict]:
    path = folder / "metrics.json"
    if not path.is_file():
        raise ScoreError(f"eval.compare: {path} not found (give evaluation folders that hold metrics.json)")
    metrics = json.loads(path.read_text())
    model = Path(metrics.get("model", folder.name))
    return f"{model.parent.name}/{model.name}", metrics


def generate_records(model, tokenizer, problems: list[Problem], cfg: Config) -> Iterator[list[dict]]:
    """Evaluate a model object: `cfg.eval.attempts` attempts at each problem (greedy when eval.temperature is 0),
    yielding the records (see generation_record) of each batch of eval.batch_size problems as it finishes."""
    greedy = cfg.eval.temperature == 0
    for start in range(0, len(problems), cfg.eval.batch_size):
        batch = problems[start : start + cfg.eval.batch_size]
        statuses: dict = {}
        rollout = generate_rollouts(
            model,
            tokenizer,
            batch,
            cfg.rollout,
            cfg.prompts,
            attempts=cfg.eval.attempts,
            max_new_tokens=cfg.eval.max_new_tokens,
            batch_size=cfg.eval.batch_size,
            samples_per_prompt=1,
            greedy=greedy,
            temperature=cfg.eval.temperature or None,
            reward_fn=grading_reward(cfg.grader, statuses),
        )
        extraction = cfg.grader.extraction
        yield [generation_record(problem, rollout, row, extraction, statuses) for row, problem in enumerate(batch)]


def shared_records(accelerator: PartialState, model: ModelOnDemand, todo: list[Problem], cfg: Config):
    """generate_records over this process's share of `todo`, gathered: every process yields, round after round,
    the records of all processes (each round one batch per process; all processes join every round)."""
    world = accelerator.num_processes
    if world == 1:
        yield from generate_records(*model.get(), todo, cfg)
        return
    mine = my_share(todo, accelerator.process_index, world)
    batches = generate_records(*model.get(), mine, cfg) if mine else iter(())
    for _ in range(math.ceil(math.ceil(len(todo) / world) / cfg.eval.batch_size)):
        yield gather_objects(next(batches, []))


def generation_record(
    problem: Problem, rollout, row: int, extraction: str = "strict", statuses: dict | None = None
) -> dict:
    """One problem's line of generations.jsonl; a code attempt also says what the judge said of it ("outcome")."""
    return {
        "id": problem.id,
        "subject": problem.subject,
        "level": problem.level,
        "gold": problem.answer,
        "attempts": [
            {
                "text": text,
                "answer": final_answer(text, problem, extraction),
                "correct": bool(rollout.rewards[row, k] > 0.5),
                "truncated": bool(rollout.truncated[row, k]),
                **({"outcome": (statuses or {}).get((problem.id, text))} if problem.domain == "code" else {}),
            }
            for k, text in enumerate(rollout.texts[row])
        ],
    }
