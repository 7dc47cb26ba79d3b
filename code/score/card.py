"""Model cards: the README.md of a trained model folder (`<run>/final/`), with the hub's metadata header.

A run's card is written once it has saved final/ (train_with_card, and the experiment's supervised rows): base
model, method and the settings that decide it (from the run's config), the training data, the command that made
it. `--task evaluate` of that folder then rewrites (evaluate_with_card) the card's evaluation part (the table and
the header's model-index) from the run's evaluations of exactly these weights: those whose settings.json records
this folder and the sha256 of its current files, evaluate's own reuse rule, so an evaluation of earlier weights in
the same folder is never listed. The rest of the card, edits included, is kept.
`--task push` uploads the folder; the hub reads the header (base_model, tags, model-index ...) for the model page.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import yaml
from accelerate import PartialState
from huggingface_hub import EvalResult, ModelCard, ModelCardData, metadata_load

from score.config import REPO_ROOT, Config, ScoreError, first_line, resolve_path
from score.data import Problem, training_problems
from score.evaluate import choose_model, evaluate, results_table
from score.models import resolve_model_path
from score.monitor import split_heldout
from score.provenance import MODEL_CARD, flat_settings, model_files_sha256
from score.rollout import RewardFn
from score.trainer import train

EVALUATIONS_START = "<!-- evaluations: rewritten by --task evaluate -->"
EVALUATIONS_END = "<!-- end of evaluations -->"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9](?:[\w.-]*\w)?")  # owner/name
RL_SETTINGS = (
    "train.rounds", "train.stage1_steps", "train.stage2_steps", "train.attempts", "train.batch_size", "train.lr",
    "train.lr_schedule", "train.warmup_steps", "train.alpha", "train.beta1", "train.beta2", "train.gamma",
    "train.kl_mode", "train.kl_estimator", "train.baseline", "train.loss_aggregation", "train.max_grad_norm",
    "train.reward", "train.seed", "rollout.samples_per_prompt", "rollout.temperature", "rollout.max_new_tokens",
)  # fmt: skip
SUPERVISED_SETTINGS = (
    "sft.dataset", "sft.rounds", "sft.steps", "sft.lr", "sft.batch_size", "sft.problems", "sft.samples",
    "sft.star_restart", "sft.train_first_attempt", "sft.max_grad_norm", "train.seed", "rollout.temperature",
    "rollout.max_new_tokens",
)  # fmt: skip
SUPERVISED = {
    "star": "STaR for self-correction (Kumar et al., 2024, Section 4): rounds of sampling two-attempt conversations "
    "and fine-tuning on the kept ones",
    "pair_sft": "Pair-SFT (Kumar et al., 2024, Section 4): fine-tuning on a wrong first attempt paired with a right "
    "one as the correction",
}
ADAPTER = "adapter_config.json"  # peft's, beside adapter_model.safetensors
DATASETS = {"d": "D (attempt 1 wrong, attempt 2 right)", "d_plus": "D+ (also right -> right)"}


def hub_id(name: str) -> str | None:
    """`name` when it reads as a hub repository (owner/name) and is no local path, else None."""
    return name if HUB_ID.fullmatch(name) and not resolve_path(name).exists() else None


def base_license(cfg: Config) -> str | None:
    """The license in the base model's own card (a hub download keeps its README.md); None when unknown."""
    try:
        card = resolve_model_path(cfg.model.name, cfg.model.base_dir) / MODEL_CARD
        license_ = metadata_load(card).get("license") if card.is_file() else None
    except (ScoreError, ValueError, yaml.YAMLError, AttributeError):  # no folder, or a header that is no mapping
        return None
    return license_ if isinstance(license_, str) and license_ != "other" else None  # "other" needs its own text


def run_command() -> str:
    """The command line of this process, as typed from the repository root when it is main.py."""
    program = Path(sys.argv[0]).resolve()
    args = [str(program.relative_to(REPO_ROOT)) if program.is_relative_to(REPO_ROOT) else sys.argv[0]]
    return shlex.join(["python", *args, *sys.argv[1:]])


def steps(n: int) -> str:
    return f"{n} step" + "s" * (n != 1)


def rl_method(cfg: Config) -> str:
    t = cfg.train
    if t.attempts == 1:
        return "Single-turn RL: REINFORCE with a KL penalty on the first attempt only (no second turn)."
    stage2 = f"Stage II with reward shaping alpha {t.alpha:g}" if t.alpha else "Stage II without reward shaping"
    parts = [f"Stage I ({steps(t.stage1_steps)})"] if t.stage1_steps else []
    parts += [f"{stage2} ({steps(t.stage2_steps)})"] if t.stage2_steps else []
    rounds = f", repeated for {t.rounds} rounds" if t.rounds > 1 else ""
    name = "SCoRe" if t.stage1_steps else "Multi-turn RL without Stage I"
    return f"{name} (Kumar et al., 2024): {' then '.join(parts)}{rounds}, REINFORCE with a KL penalty."


def held_weights(final: Path) -> tuple[bool, Path | None]:
    """(whether the folder holds full weights, the adapter_config.json of its LoRA adapter, in it or in adapter/,
    or None)."""
    full = (final / "config.json").is_file() and any(
        p.name != "adapter_model.safetensors" for p in final.glob("*.safetensors")
    )
    return full, next((p for p in (final / ADAPTER, final / "adapter" / ADAPTER) if p.is_file()), None)


def adapter_settings(adapter: Path) -> dict:
    """peft's adapter_config.json as a dict; one error line when it is damaged."""
    try:
        lora = json.loads(adapter.read_text())
    except ValueError:  # not JSON, or not text
        lora = None
    if not isinstance(lora, dict):
        raise ScoreError(f"{adapter} is damaged (not a JSON object)")
    return lora


def weights_text(final: Path, full: bool, adapter: Path | None) -> str:
    if adapter is None:
        return "full weights (safetensors) and tokenizer"
    lora = adapter_settings(adapter)
    modules = lora.get("target_modules")
    modules = ", ".join(sorted(modules)) if isinstance(modules, list) else modules
    text = (
        f"a LoRA adapter (peft, `{adapter.parent.relative_to(final.parent)}/`: rank {lora.get('r')}, alpha "
        f"{lora.get('lora_alpha')}, on {modules}) to load on the base model"
    )
    return text + (", and the merged full weights" if full else "")


def own_evaluations(final: Path) -> list[tuple[str, dict, dict]]:
    """(name, settings, metrics) of the finished evaluations in the run's eval/ of exactly these weights."""
    files_sha256 = model_files_sha256(final)
    found = []
    for settings_path in sorted((final.parent / "eval").glob("*/settings.json")):
        metrics_path = settings_path.with_name("metrics.json")
        try:
            settings = json.loads(settings_path.read_text())
            metrics = json.loads(metrics_path.read_text())
        except (OSError, ValueError):  # unfinished or damaged (not JSON, not text): not a result of this model
            continue
        if (
            isinstance(settings, dict)
            and isinstance(metrics, dict)
            and Path(str(settings.get("model"))).resolve() == final.resolve()
            and settings.get("model_files_sha256") == files_sha256
        ):
            found.append((settings_path.parent.name, settings, metrics))
    return found


def evaluation_part(final: Path) -> tuple[str, list[EvalResult] | None]:
    """The card's evaluation section (between its markers) and the header's eval results."""
    evaluations = own_evaluations(final)
    if not evaluations:
        return f"{EVALUATIONS_START}\nNo `--task evaluate` of these weights yet.\n{EVALUATIONS_END}", None
    lines = [results_table([(name, metrics) for name, _, metrics in evaluations]), ""]
    results = []
    for name, settings, metrics in evaluations:
        temperature = settings.get("eval.temperature")
        decoding = "greedy" if not temperature else f"temperature {temperature}"
        lines.append(
            f"- `{name}`: {settings.get('eval.attempts')} attempts, {decoding}, at most "
            f"{settings.get('eval.max_new_tokens')} new tokens each, {settings.get('rollout.engine')} engine, "
            f"{settings.get('dtype')}"
        )
        for key, label in (("accuracy_t1", "Accuracy@t1"), ("accuracy_t2", "Accuracy@t2")):
            if key in metrics:
                results.append(
                    EvalResult(
                        task_type="text-generation",
                        dataset_type=name,
                        dataset_name=name,
                        metric_type="accuracy",
                        metric_name=label,
                        metric_value=round(100 * metrics[key], 1),
                    )
                )
    lines += ["", "Percent; n is the number of problems. Results in `eval/<name>/` beside this folder."]
    return "\n".join([EVALUATIONS_START, *lines, EVALUATIONS_END]), results or None


def write_card(
    final: Path, cfg: Config, problems: list[Problem], supervised: str = "", start: Path | None = None
) -> Path:
    """Write final/README.md for the run `cfg` that trained on `problems`: by RL (supervised empty) or by a
    supervised baseline ("star", "pair_sft") from `start`."""
    full, adapter = held_weights(final)
    domains = sorted({p.domain for p in problems})
    section, results = evaluation_part(final)
    sources = [hub_id(source) for source in (cfg.data.source, cfg.eval.source)]
    data = ModelCardData(
        base_model=hub_id(cfg.model.name),
        library_name="peft" if adapter and not full else "transformers",
        pipeline_tag="text-generation",
        license=base_license(cfg),
        datasets=sorted({s for s in sources if s}) or None,
        tags=["score", "self-correction", "supervised-fine-tuning" if supervised else "reinforcement-learning"]
        + domains
        + (["lora", "peft"] if adapter else []),
        model_name=final.parent.name if results else None,
        eval_results=results,
    )
    if supervised:
        method = f"{SUPERVISED[supervised]}, on {DATASETS[cfg.sft.dataset]}, starting from `{start}`."
    else:
        method = rl_method(cfg)
    names = SUPERVISED_SETTINGS if supervised else RL_SETTINGS
    values = flat_settings(cfg)
    settings = [f"| {name} | {values[name]} |" for name in names]
    filters = [f"subjects {', '.join(cfg.data.subjects)}"] if cfg.data.subjects else []
    filters += [f"levels {', '.join(map(str, cfg.data.levels))}"] if cfg.data.levels else []
    body = [
        f"# {final.parent.name}",
        "",
        f"`{cfg.model.name}` trained to answer, then to correct its answer when asked to in a second turn, by an "
        "open implementation of SCoRe (Kumar et al., 2024, [arXiv 2409.12917](https://arxiv.org/abs/2409.12917); "
        "not the paper's code).",
        "",
        "## Model",
        "",
        f"- Base model: `{cfg.model.name}`",
        f"- This folder holds {weights_text(final, full, adapter)}.",
        "",
        "## Method",
        "",
        method,
        "",
        "| Setting | Value |",
        "|---|---|",
        *settings,
        "",
        "Every other setting is in the run's `config.yaml`.",
        "",
        "## Data",
        "",
        f"- {len(problems)} training problems from `{cfg.data.source}` ({', '.join(domains) or 'no'} domain"
        f"{'s' if len(domains) > 1 else ''}{'; ' + ', '.join(filters) if filters else ''})",
        "",
        "## Evaluation",
        "",
        section,
        "",
        "## How it was made",
        "",
        "```bash",
        run_command(),
        "```",
        "",
    ]
    path = final / MODEL_CARD
    try:
        ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)).save(path)
    except OSError as e:
        raise ScoreError(f"cannot write the model card {path}: {e.strerror or e}") from None
    return path


def refresh_card(final: Path) -> None:
    """Rewrite the evaluation part of the card write_card made in `final` (no card, or one without its markers,
    is left alone). A card whose header no longer parses, or that cannot be written, is named in one line and kept
    as it is: the evaluation itself is done."""
    path = final / MODEL_CARD
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else ""  # as ModelCard.save writes it
    except (OSError, ValueError) as e:  # not UTF-8 text: no card of write_card's
        print(f"card: {path} not refreshed, it cannot be read ({first_line(e)})")
        return
    if EVALUATIONS_START not in text or EVALUATIONS_END not in text:
        return
    try:
        card = ModelCard(text)
    except (ValueError, TypeError, yaml.YAMLError) as e:  # TypeError: a field of the wrong kind (tags: 7)
        print(f"card: {path} not refreshed, its header does not parse ({first_line(e)})")
        return
    section, results = evaluation_part(final)
    before, _, rest = card.text.partition(EVALUATIONS_START)
    card.text = before + section + rest.partition(EVALUATIONS_END)[2]
    card.data.eval_results, card.data.model_name = results, final.parent.name if results else None
    try:
        card.save(path)
    except OSError as e:
        print(f"card: {path} not refreshed, it cannot be written ({e.strerror or e})")


def write_run_card(cfg: Config, final: Path, supervised: str = "", start: Path | None = None) -> Path:
    """write_card for the run `cfg` trained into `final`, with the training problems it loaded as it loaded them
    (RL: without the held-out ones)."""
    problems = training_problems(cfg.data)
    if not supervised:
        problems = split_heldout(problems, cfg)[0]
    return write_card(final, cfg, problems, supervised, start)


def train_with_card(cfg: Config, reward_fn: RewardFn | None = None) -> Path:
    """trainer.train, then the card of the run's final/ (the main process writes it); returns the run folder."""
    root = train(cfg, reward_fn)
    if PartialState().is_main_process:
        write_run_card(cfg, root / "final")
    return root


def evaluate_with_card(cfg: Config) -> Path:
    """evaluate.evaluate, then the evaluation part of the evaluated model's card (refresh_card); returns the
    evaluation folder."""
    out = evaluate(cfg)
    if PartialState().is_main_process:
        refresh_card(choose_model(cfg)[0])
    return out
