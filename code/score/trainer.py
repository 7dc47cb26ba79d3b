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
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoTokenizer

from score import objectives
from score.checkpoints import RunFiles, keep_logged_steps, save_checkpoint, save_model
from score.config import Config, ScoreError, resolve_path
from score.data import Problem, load_math
from score.evaluate import plot_training
from score.grader import rewards as grade
from score.guards import check_context, check_sampling
from score.logs import MetricsLogger, step_record
from score.models import load_model, resolve_model_path, weight_dtypes
from score.monitor import evaluate_heldout, split_heldout
from score.preemption import StopRequests, TrainingStopped
from score.progress import progress
from score.rollout import RewardFn, Rollout, generate_rollouts


def stage_schedule(cfg: Config) -> list[int]:
    """The stage (1 or 2) of every optimizer step: rounds of Stage I steps then Stage II steps."""
    t = cfg.train
    return ([1] * t.stage1_steps + [2] * t.stage2_steps) * t.rounds


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Learning-rate multiplier of optimizer step `step` (0-based) of `total`: linear warm-up over `warmup` steps
    (1/(warmup+1), ..., 1), then constant, or decaying linearly or along a cosine to 0 just after the last step."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


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


def train(cfg: Config, reward_fn: RewardFn | None = None) -> Path:
    """Run SCoRe training as configured; returns the run folder.

    reward_fn(texts, problems) -> rewards replaces the answer checker (for other tasks, and for tests).
    SIGTERM or SIGUSR1 stops the run at the next step boundary with a checkpoint (raises TrainingStopped).
    """
    with StopRequests() as stop:
        return run_training(cfg, reward_fn, stop)


def run_training(cfg: Config, reward_fn: RewardFn | None, stop: StopRequests) -> Path:
    t = cfg.train
    check_sampling(cfg)
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
    problems, heldout = split_heldout(problems, cfg)

    set_seed(t.seed + rank)  # processes sample differently; the model starts identical from the checkpoint
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    policy = load_model(model_path, cfg.model, policy_dtype)
    if cfg.model.gradient_checkpointing:
        policy.gradient_checkpointing_enable()  # generation in eval mode still uses the KV cache
    reference = load_model(model_path, cfg.model, reference_dtype).to(accelerator.device).eval()
    reference.requires_grad_(False)
    check_context(tokenizer, policy.config, problems + heldout, cfg, evaluating=bool(heldout))
    schedule = stage_schedule(cfg)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    # Not prepared: accelerate would step a prepared scheduler once per process per optimizer step.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, len(schedule), t.warmup_steps, t.lr_schedule)
    )
    policy, optimizer = accelerator.prepare(policy, optimizer)
    accelerator.register_for_checkpointing(scheduler)

    start = 0
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        start = json.loads((checkpoint / "trainer_state.json").read_text())["step"]
        if accelerator.is_main_process:
            print(f"resuming from {checkpoint} (step {start} of {len(schedule)})")
    if accelerator.is_main_process:
        files.root.mkdir(parents=True, exist_ok=True)
        cfg.save(files.root / "config.yaml")
        keep_logged_steps(files, upto=start)
    accelerator.wait_for_everyone()

    logger = MetricsLogger(files, enabled=accelerator.is_main_process)
    bar = progress(total=len(schedule), initial=start, desc="SCoRe", disable=not accelerator.is_main_process)
    conversations = t.batch_size // world * cfg.rollout.samples_per_prompt
    failures = 0
    times = {}
    temperature = cfg.rollout.temperature  # tokens are scored under the distribution that sampled them

    def watch(step: int) -> None:
        if heldout and (step % t.eval_every == 0 or step == len(schedule)):
            with accelerator.autocast():
                metrics = evaluate_heldout(accelerator, accelerator.unwrap_model(policy), tokenizer, heldout, cfg)
            logger.log({"step": step, **metrics})
            if accelerator.is_main_process and step:
                plot_training(files.metrics, files.root / "training.png")

    if start == 0:
        watch(0)

    def timed_rewards(texts: list[str], probs: list[Problem]) -> list[float]:
        began = clock()
        if reward_fn is not None:
            scores = reward_fn(texts, probs)
        else:
            answers = [p.answer for p in probs]
            scores = grade(texts, answers, cfg.grader.workers, cfg.grader.timeout, cfg.grader.extraction)
        times["score"] += clock() - began
        return scores

    for step in range(start, len(schedule)):
        if received := stop.agreed(accelerator):
            bar.close()
            logger.close()
            stop_at_step_boundary(accelerator, files, step, schedule, t.keep_checkpoints, received)
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
        advantages = objectives.process_advantages(
            rollout.rewards.to(device),
            accelerator.gather,
            rank,
            stage=stage,
            alpha=t.alpha,
            baseline=t.baseline,
            group_size=cfg.rollout.samples_per_prompt,
            gamma=t.gamma,
        )
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
                ref_logp = objectives.token_logprobs(ref_logits, input_ids, temperature=temperature)
            del ref_logits
            times["reference"] += clock() - began
            began = clock()
            last = index == steps_in_batch - 1
            with accelerator.no_sync(policy) if not last else nullcontext(), accelerator.autocast():
                logits = policy(input_ids=input_ids, attention_mask=attention_mask).logits
                logp = objectives.token_logprobs(logits, input_ids, temperature=temperature)
                loss, stats = objectives.score_loss(
                    logp,
                    ref_logp,
                    mask,
                    advantages[rows],
                    kl_coefs,
                    t.kl_estimator,
                    normalizer,
                    t.loss_aggregation,
                    t.kl_mode,
                )
                accelerator.backward(loss)
            with torch.no_grad():
                sums[0] += loss.detach() / world
                sums[1] += (objectives.token_entropy(logits, temperature=temperature) * (mask > 0)).sum()
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
        bar.set_postfix(
            {k: f"{record[k]:.3f}" for k in ("reward_t1", "reward_t2", "kl_t1", "kl_t2") if k in record}, refresh=False
        )
        bar.update(1)
        done = step + 1
        watch(done)
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


def stop_at_step_boundary(
    accelerator: Accelerator, files: RunFiles, done: int, schedule: list[int], keep: int, received: str
) -> None:
    """Checkpoint the `done` steps (unless that checkpoint exists already) and raise TrainingStopped everywhere."""
    checkpoint = files.checkpoints / f"step_{done}"
    if done and not checkpoint.is_dir():
        save_checkpoint(accelerator, files, done, schedule[done - 1], keep)
    accelerator.end_training()
    raise TrainingStopped(
        f"stopped by signal {received} after step {done} of {len(schedule)}"
        + (f"; checkpoint {checkpoint}, continue with train.resume=true" if done else "")
    )


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
