"""SCoRe training loop: two-attempt rollouts, Stage I / Stage II updates on accelerate, checkpoints, logs.

One optimizer step:
  1. every process takes its share of `train.batch_size` problems and samples
     `rollout.samples_per_prompt` two-attempt conversations of each with the current policy;
  2. the answer checker scores both attempts;
  3. micro-batches of whole conversations go through the frozen reference and the policy (one forward
     pass each covers both attempts); objectives.score_loss weighs every token by its attempt and stage;
  4. gradients are summed over micro-batches and processes, clipped, and AdamW steps.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from score import objectives
from score.config import Config, ModelConfig, ScoreError, resolve_path
from score.data import Problem, load_math
from score.grader import rewards as grade
from score.rollout import RewardFn, Rollout, generate_rollouts

SAMPLES_LOGGED = 4  # conversations written to samples.jsonl each time


def resolve_model_path(name: str, base_dir: str) -> Path:
    """A downloaded model under base_dir/<name>, else `name` itself as a local folder."""
    for candidate in (resolve_path(base_dir) / name, resolve_path(name)):
        if (candidate / "config.json").is_file():
            return candidate
    raise ScoreError(
        f"model '{name}' not found in {resolve_path(base_dir)} or as a folder; "
        "run `python code/main.py --task download` first"
    )


def load_model(path: Path, model: ModelConfig, dtype: torch.dtype) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=model.attn_implementation)


def weight_dtypes(model: ModelConfig, on_gpu: bool) -> tuple[torch.dtype, torch.dtype, str]:
    """(policy dtype, reference dtype, accelerate mixed precision).

    `auto` keeps fp32 master weights under bf16 autocast on GPU: at the paper's lr (5e-6) most bf16 weight
    updates would round away. The frozen reference needs no master copy and stays in bf16.
    """
    if model.dtype == "auto":
        return (torch.float32, torch.bfloat16, "bf16") if on_gpu else (torch.float32, torch.float32, "no")
    dtype = getattr(torch, model.dtype)
    return dtype, dtype, "no"


def stage_schedule(cfg: Config) -> list[int]:
    """The stage (1 or 2) of every optimizer step: rounds of Stage I steps then Stage II steps."""
    t = cfg.train
    return ([1] * t.stage1_steps + [2] * t.stage2_steps) * t.rounds


def step_problems(
    problems: list[Problem], step: int, batch_size: int, rank: int, world: int, seed: int
) -> list[Problem]:
    """This process's problems for a step: a fixed seeded pass over the data per epoch, so the position in
    the data follows from the step alone and a resumed run sees exactly the problems it would have seen."""
    per_process = batch_size // world
    start = step * batch_size + rank * per_process
    orders = {}
    chosen = []
    for index in range(start, start + per_process):
        epoch, offset = divmod(index, len(problems))
        if epoch not in orders:
            orders[epoch] = torch.randperm(len(problems), generator=torch.Generator().manual_seed(seed + epoch))
        chosen.append(problems[orders[epoch][offset]])
    return chosen


@dataclass
class RunFiles:
    """Everything a run writes, under saved_models/<run_name>/."""

    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def samples(self) -> Path:
        return self.root / "samples.jsonl"

    def latest_checkpoint(self) -> Path | None:
        steps = sorted(self.checkpoints.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
        return steps[-1] if steps else None


def save_atomically(target: Path, write) -> None:
    """write(tmp_dir) then rename: a crash never leaves a half-written folder at `target`."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    old = target.with_name(target.name + ".old")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def save_model(accelerator: Accelerator, policy, tokenizer, target: Path) -> None:
    state = accelerator.get_state_dict(policy)  # every process joins (sharded setups gather here)
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(policy)

        def write(tmp: Path) -> None:
            model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
            tokenizer.save_pretrained(tmp)

        save_atomically(target, write)
    accelerator.wait_for_everyone()


def save_checkpoint(accelerator: Accelerator, files: RunFiles, step: int, stage: int, keep: int) -> None:
    target = files.checkpoints / f"step_{step}"
    tmp = target.with_name(target.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # model, optimizer, scheduler, RNG states of every process
    if accelerator.is_main_process:
        state = {"step": step, "stage": stage, "data_position": step}
        (tmp / "trainer_state.json").write_text(json.dumps(state))
        tmp.rename(target)
        for old in sorted(files.checkpoints.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def clock() -> float:
    """perf_counter once queued GPU work has run, so each phase is charged its own kernels."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def micro_batches(rollout: Rollout, size: int):
    """Row slices of the rollout, each trimmed to its longest conversation (padding is on the right)."""
    for start in range(0, rollout.input_ids.shape[0], size):
        rows = slice(start, start + size)
        length = int(rollout.attention_mask[rows].sum(1).max())
        cols = slice(0, length)
        yield (
            rollout.input_ids[rows, cols],
            rollout.attention_mask[rows, cols],
            rollout.attempt_mask[rows, cols],
            rows,
        )


def transition_rates(rewards: torch.Tensor) -> tuple[float, float]:
    """Among conversations: fraction wrong at t1 and right at t2 (i->c), right then wrong (c->i)."""
    if rewards.shape[1] < 2:
        return 0.0, 0.0
    right1, right2 = rewards[:, 0] > 0.5, rewards[:, 1] > 0.5
    return (~right1 & right2).float().mean().item(), (right1 & ~right2).float().mean().item()


def train(cfg: Config, reward_fn: RewardFn | None = None) -> Path:
    """Run SCoRe training as configured; returns the run folder.

    reward_fn(texts, problems) -> rewards replaces the answer checker (for other tasks, and for tests).
    """
    t = cfg.train
    on_gpu = torch.cuda.is_available()
    policy_dtype, reference_dtype, mixed_precision = weight_dtypes(cfg.model, on_gpu)
    # cpu=True on GPU-less machines makes `accelerate launch --multi_gpu` / torchrun form a gloo group.
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=not on_gpu)
    world, rank = accelerator.num_processes, accelerator.process_index
    if t.batch_size % world:
        raise ScoreError(f"train.batch_size={t.batch_size} is not divisible by the {world} processes")
    files = RunFiles(resolve_path(t.output_dir) / t.run_name)
    checkpoint = files.latest_checkpoint() if t.resume else None
    if not t.resume and files.metrics.exists():
        raise ScoreError(f"{files.root} already holds a run; set train.resume=true or choose another train.run_name")

    model_path = resolve_model_path(cfg.model.name, cfg.model.base_dir)
    problems = load_math(
        cfg.data.source,
        split="train",
        scheme=cfg.data.scheme,
        subjects=cfg.data.subjects or None,
        levels=cfg.data.levels or None,
        limit=cfg.data.max_problems or None,
        seed=cfg.data.seed,
        math500_ids=resolve_path(cfg.data.math500_ids),
    )
    if not problems:
        raise ScoreError(f"no training problems left in {cfg.data.source} after the subject/level filters")

    set_seed(t.seed + rank)  # processes sample differently; the model starts identical from the checkpoint
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    policy = load_model(model_path, cfg.model, policy_dtype)
    if cfg.model.gradient_checkpointing:
        policy.gradient_checkpointing_enable()  # generation in eval mode still uses the KV cache
    reference = load_model(model_path, cfg.model, reference_dtype).to(accelerator.device).eval()
    reference.requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    # Not prepared: accelerate would step a prepared scheduler once per process per optimizer step.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (t.warmup_steps + 1)))
    policy, optimizer = accelerator.prepare(policy, optimizer)
    accelerator.register_for_checkpointing(scheduler)

    schedule = stage_schedule(cfg)
    start = 0
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        start = json.loads((checkpoint / "trainer_state.json").read_text())["step"]
    if accelerator.is_main_process:
        files.root.mkdir(parents=True, exist_ok=True)
        cfg.save(files.root / "config.yaml")
        keep_logged_steps(files, upto=start)
    accelerator.wait_for_everyone()

    logger = MetricsLogger(files, enabled=accelerator.is_main_process)
    bar = tqdm(total=len(schedule), initial=start, desc="SCoRe", disable=not accelerator.is_main_process)
    conversations = t.batch_size // world * cfg.rollout.samples_per_prompt
    failures = 0
    times = {}

    def timed_rewards(texts: list[str], probs: list[Problem]) -> list[float]:
        began = clock()
        if reward_fn is not None:
            scores = reward_fn(texts, probs)
        else:
            scores = grade(texts, [p.answer for p in probs], cfg.grader.workers, cfg.grader.timeout)
        times["score"] += clock() - began
        return scores

    for step in range(start, len(schedule)):
        stage = schedule[step]
        batch = step_problems(problems, step, t.batch_size, rank, world, seed=cfg.data.seed + 1)
        times.update(generate=0.0, score=0.0, reference=0.0, backward=0.0)

        began = clock()
        with accelerator.autocast():
            rollout = generate_rollouts(
                accelerator.unwrap_model(policy),
                tokenizer,
                batch,
                cfg.rollout,
                cfg.prompts,
                attempts=t.attempts,
                samples_per_prompt=cfg.rollout.samples_per_prompt,
                reward_fn=timed_rewards,
            )
        times["generate"] = clock() - began - times["score"]

        device = accelerator.device
        advantages = objectives.attempt_advantages(
            rollout.rewards, stage=stage, alpha=t.alpha, baseline=t.baseline, group_size=cfg.rollout.samples_per_prompt
        ).to(device)
        kl_coefs = objectives.kl_coefficients(stage, t.attempts, t.beta1, t.beta2)
        units = objectives.loss_units(rollout.attempt_mask, t.loss_aggregation).to(device)
        # DDP averages gradients over processes, so each process divides by global units / world.
        normalizer = accelerator.reduce(units, reduction="sum") / world
        # loss, entropy sum, KL sum per attempt: kept on the device, read once per step
        sums = torch.zeros(2 + t.attempts, device=device, dtype=torch.float64)
        steps_in_batch = math.ceil(conversations / t.micro_batch_size)
        for index, (input_ids, attention_mask, mask, rows) in enumerate(micro_batches(rollout, t.micro_batch_size)):
            input_ids, attention_mask, mask = input_ids.to(device), attention_mask.to(device), mask.to(device)
            began = clock()
            with torch.no_grad(), accelerator.autocast():
                ref_logits = reference(input_ids=input_ids, attention_mask=attention_mask).logits
                ref_logp = objectives.token_logprobs(ref_logits, input_ids)
            del ref_logits
            times["reference"] += clock() - began
            began = clock()
            last = index == steps_in_batch - 1
            with accelerator.no_sync(policy) if not last else nullcontext(), accelerator.autocast():
                logits = policy(input_ids=input_ids, attention_mask=attention_mask).logits
                logp = objectives.token_logprobs(logits, input_ids)
                loss, stats = objectives.score_loss(
                    logp,
                    ref_logp,
                    mask,
                    advantages[rows],
                    kl_coefs,
                    t.kl_estimator,
                    normalizer,
                    t.loss_aggregation,
                )
                accelerator.backward(loss)
            with torch.no_grad():
                sums[0] += loss.detach() / world
                sums[1] += (objectives.token_entropy(logits) * (mask > 0)).sum()
                sums[2:] += stats["kl_sum"]
            del logits
            times["backward"] += clock() - began

        sums = accelerator.reduce(sums, reduction="sum").cpu()
        loss_total = sums[0].item()
        if not math.isfinite(loss_total):
            optimizer.zero_grad(set_to_none=True)
            failures += 1
            logger.log({"step": step + 1, "stage": stage, "skipped": "non-finite loss", "loss": str(loss_total)})
            if failures >= t.max_nonfinite_steps:
                raise ScoreError(
                    f"{failures} non-finite losses in a row at step {step + 1}; "
                    f"the last good checkpoint is in {files.checkpoints}"
                )
            continue
        failures = 0
        grad_norm = accelerator.clip_grad_norm_(policy.parameters(), t.max_grad_norm) if t.max_grad_norm > 0 else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        record = step_record(accelerator, rollout, sums, times, step, stage, scheduler, grad_norm)
        logger.log(record)
        bar.set_postfix({k: f"{record[k]:.3f}" for k in ("reward_t1", "reward_t2", "kl_t1", "kl_t2") if k in record})
        bar.update(1)
        done = step + 1
        if t.sample_every and done % t.sample_every == 0:
            logger.samples(done, stage, batch, rollout)
        stage_ends = done == len(schedule) or schedule[done] != stage
        if (t.save_every and done % t.save_every == 0) or done == len(schedule):
            save_checkpoint(accelerator, files, done, stage, t.keep_checkpoints)
        if stage_ends:
            round_index = step // (t.stage1_steps + t.stage2_steps) + 1
            save_model(accelerator, policy, tokenizer, files.root / "stage_ends" / f"round{round_index}_stage{stage}")
    bar.close()
    check_replicas_agree(accelerator, policy)
    save_model(accelerator, policy, tokenizer, files.root / "final")
    logger.close()
    if accelerator.is_main_process:
        print(f"run saved to {files.root} (final model: {files.root / 'final'})")
    accelerator.end_training()
    return files.root


def check_replicas_agree(accelerator: Accelerator, policy) -> None:
    """Data-parallel replicas must hold the same weights; compare a checksum of every process's copy."""
    if accelerator.num_processes == 1:
        return
    params = [p.detach().double() for p in policy.parameters()]
    checksum = torch.stack([sum(p.sum() for p in params), sum((p * p).sum() for p in params)])
    checksums = accelerator.gather(checksum.view(1, 2))
    if not torch.equal(checksums, checksums[:1].expand_as(checksums)):
        raise ScoreError(f"model weights differ across processes: {checksums.tolist()}")
    if accelerator.is_main_process:
        print(f"weights identical on {accelerator.num_processes} processes")


def step_record(accelerator, rollout, summed, times, step, stage, scheduler, grad_norm) -> dict:
    """One metrics.jsonl line, with every quantity averaged over all processes' conversations.

    summed: loss, entropy sum and KL sum per attempt, already summed over processes."""
    device = accelerator.device
    rewards = accelerator.gather(rollout.rewards.to(device)).cpu()
    lengths = accelerator.gather(rollout.lengths.to(device)).float().cpu()
    truncated = accelerator.gather(rollout.truncated.to(device)).float().cpu()
    attempts = rewards.shape[1]
    counts = torch.stack([(rollout.attempt_mask == k).sum() for k in range(1, attempts + 1)]).to(device)
    token_counts = accelerator.reduce(counts, reduction="sum").cpu()
    record = {"step": step + 1, "stage": stage, "loss": summed[0].item()}
    for k in range(attempts):
        record[f"reward_t{k + 1}"] = rewards[:, k].mean().item()
    record["i_to_c"], record["c_to_i"] = transition_rates(rewards)
    for k in range(attempts):
        record[f"kl_t{k + 1}"] = (summed[2 + k] / token_counts[k].clamp(min=1)).item()
    record["entropy"] = (summed[1] / token_counts.sum().clamp(min=1)).item()
    for k in range(attempts):
        record[f"length_t{k + 1}"] = lengths[:, k].mean().item()
        record[f"truncated_t{k + 1}"] = truncated[:, k].mean().item()
    record["lr"] = scheduler.get_last_lr()[0]
    if grad_norm is not None:
        record["grad_norm"] = float(grad_norm)
    record.update({f"seconds_{name}": value for name, value in times.items()})
    return record


def keep_logged_steps(files: RunFiles, upto: int) -> None:
    """On resume, drop log lines of steps after the checkpoint: they will be run again."""
    for path in (files.metrics, files.samples):
        if path.exists():
            lines = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= upto]
            path.write_text("".join(line + "\n" for line in lines))


class MetricsLogger:
    """metrics.jsonl, samples.jsonl and TensorBoard, written by the main process only."""

    def __init__(self, files: RunFiles, enabled: bool):
        self.files, self.enabled = files, enabled
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(files.root / "tensorboard"))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.files.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self.writer.add_scalar(f"train/{key}", value, record["step"])
        self.writer.flush()

    def samples(self, step: int, stage: int, batch: list[Problem], rollout: Rollout) -> None:
        if not self.enabled:
            return
        with self.files.samples.open("a") as f:
            for row in range(min(SAMPLES_LOGGED, len(rollout.texts))):
                problem = batch[int(rollout.problem_index[row])]
                entry = {
                    "step": step,
                    "stage": stage,
                    "id": problem.id,
                    "problem": problem.problem,
                    "answer": problem.answer,
                    "attempts": rollout.texts[row],
                    "rewards": rollout.rewards[row].tolist(),
                }
                f.write(json.dumps(entry) + "\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
