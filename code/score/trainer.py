"""SCoRe training loop: two-attempt rollouts, Stage I / Stage II updates on accelerate, checkpoints, logs.

One optimizer step:
  1. every process takes its share of `train.batch_size` problems and samples
     `rollout.samples_per_prompt` two-attempt conversations of each with the current policy;
  2. the answer checker scores both attempts;
  3. micro-batches of whole conversations go through the frozen reference and the policy (one forward
     pass each covers both attempts); objectives.score_loss weighs every token by its attempt and stage;
  4. gradients are summed over micro-batches and processes, clipped, and AdamW steps; a step whose loss or
     gradient norm is not finite is skipped (weights and optimizer untouched).

The policy is replicated (DDP) or, when launched with configs/accelerate/fsdp.yaml, sharded with FSDP2
(models.shard_policy); the loop is the same for both.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoTokenizer

from score import objectives
from score.checkpoints import (
    RunFiles,
    check_resume,
    keep_logged_steps,
    load_checkpoint,
    save_checkpoint,
    save_model,
    writing,
)
from score.config import Config, ScoreError, resolve_path
from score.data import Problem, training_problems
from score.distributed import gather_objects
from score.domains import problem_rewards
from score.engines import Engine, open_engine, resolve_engine_name, resolve_tis_cap
from score.evaluate import plot_training
from score.guards import check_context, check_sampling, check_step_size
from score.locks import hold_folder, let_go_if_alone
from score.logs import MetricsLogger, step_record
from score.models import (
    AdaptersOff,
    adapter_base,
    add_lora,
    check_sharding_settings,
    disable_dropout,
    engine_state,
    generation_model,
    gradient_sync,
    is_sharded,
    load_model,
    resolve_model_path,
    shard_policy,
    sharding_requested,
    transformers_model,
    weight_dtypes,
)
from score.monitor import evaluate_heldout, split_heldout
from score.preemption import (
    TIME_UP_REASON,
    StopRequests,
    TrainingStopped,
    next_step_fits,
    note_stop,
    run_deadline,
)
from score.progress import progress
from score.provenance import RECORD, files_record
from score.rollout import RewardFn, Rollout, generate_rollouts
from score.seeding import random_states_kept


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


def digit_reward(texts: list[str], problems: list[Problem]) -> list[float]:
    """train.reward=digit: 1 when the attempt contains a digit. A stand-in that a random tiny model earns about
    half the time, so CPU smoke runs change the weights; it says nothing about maths."""
    return [float(any(c.isdigit() for c in text)) for text in texts]


def clock() -> float:
    """perf_counter once queued GPU work has run, so each phase is charged its own kernels."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def micro_batches(rollout: Rollout, size: int, tokens: int = 0):
    """Micro-batches of whole conversations, each trimmed to its longest (padding is on the right): consecutive
    rows, `size` at a time, or with a token budget `tokens` > 0 rows sorted by length, as many per micro-batch as
    fit rows x longest <= tokens (at least one), so conversations of like length share one and padding is small.
    The loss and gradients do not depend on the grouping (objectives.loss_units: one normalizer per step)."""
    lengths = rollout.attention_mask.sum(1)
    if tokens > 0:
        groups, group = [], []
        for row in torch.argsort(lengths, descending=True, stable=True).tolist():
            if group and (len(group) + 1) * int(lengths[group[0]]) > tokens:
                groups.append(group)
                group = []
            group.append(row)
        groups.append(group)
    else:
        groups = [list(range(s, min(s + size, len(lengths)))) for s in range(0, len(lengths), size)]
    for group in groups:
        rows = torch.tensor(group)
        cols = slice(0, int(lengths[rows].max()))
        yield rollout.input_ids[rows, cols], rollout.attention_mask[rows, cols], rollout.attempt_mask[rows, cols], rows


@dataclass
class Run:
    """Everything the loop works with, built by start_run."""

    cfg: Config
    accelerator: Accelerator
    files: RunFiles
    problems: list[Problem]
    tokenizer: object
    policy: torch.nn.Module
    reference: torch.nn.Module | AdaptersOff
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    schedule: list[int]
    start: int
    heldout: list[Problem]
    logger: MetricsLogger | None = None
    times: dict = field(default_factory=dict)
    engine: Engine | None = None  # an engine with its own weights (vllm, hf's bf16 copy); None: the policy samples
    deadline: float | None = None  # epoch seconds by which the main process stops with a checkpoint (preemption)
    tis_cap: float = 0.0  # rollout.tis_cap resolved for the engine (engines.resolve_tis_cap)


def start_run(cfg: Config) -> Run:
    """Processes, run folder, data, models (sharded or replicated), optimizer, and the checkpoint to resume."""
    t = cfg.train
    started = time.time()
    check_sampling(cfg)
    on_gpu = torch.cuda.is_available()
    policy_dtype, reference_dtype, mixed_precision = weight_dtypes(cfg.model, on_gpu)
    # cpu=True on GPU-less machines makes `accelerate launch --multi_gpu` / torchrun form a gloo group.
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=not on_gpu)
    world, rank = accelerator.num_processes, accelerator.process_index
    if t.batch_size % world:
        raise ScoreError(f"train.batch_size={t.batch_size} is not divisible by the {world} processes")
    sharded = sharding_requested(accelerator)
    if sharded:
        check_sharding_settings(t.micro_batch_tokens)
    if cfg.model.lora_rank and not cfg.model.lora_merge_on_save and resolve_engine_name(cfg.rollout.engine) == "vllm":
        # refused before training, not after it when run.slurm's evaluation of final/ would fail
        raise ScoreError(
            "model.lora_merge_on_save=false with the vllm engine: final/ would hold an adapter only, which vLLM "
            "does not load; set model.lora_merge_on_save=true (or rollout.engine=hf)"
        )
    files = RunFiles(resolve_path(t.output_dir) / t.run_name)
    with writing(files.root):  # the lock file is the first thing written there
        hold_folder(files.root / ".lock", "train.run_name", accelerator.is_main_process)
    model_path = resolve_model_path(cfg.model.name, cfg.model.base_dir)
    if cfg.model.lora_rank and (base := adapter_base(model_path)) is not None:
        # peft would save the new adapters as adapters of `base`, which lacks the old ones (issue 26)
        raise ScoreError(
            f"model.name={cfg.model.name} holds a LoRA adapter only: new LoRA adapters trained on it would be saved "
            f"as adapters of its base {base}, without this one; start from merged weights (model.lora_merge_on_save="
            "true saves them in final/) or set model.lora_rank=0"
        )
    problems = training_problems(cfg.data)
    # what the run trains from, read once by one process: a resume must find the same (defect: another base model)
    (record,) = gather_objects([files_record(model_path, problems)] if accelerator.is_main_process else [])
    checkpoint = check_resume(files, cfg, record, accelerator.is_main_process)
    problems, heldout = split_heldout(problems, cfg)

    set_seed(t.seed + rank)  # processes sample differently; the model starts identical from the checkpoint
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    policy = load_model(model_path, cfg.model, policy_dtype)
    if cfg.model.gradient_checkpointing:
        policy.activation_checkpointing_enable()
    # Train mode: Transformers checkpoints activations only in train mode. With dropout off the mode changes
    # nothing else; generation switches to eval mode (and its KV cache) and back.
    disable_dropout(policy)
    policy.train()
    lora = cfg.model.lora_rank > 0
    width = policy.config.hidden_size
    if cfg.model.lora_rank > width:  # rank past the width adds weights (and minutes per step), not directions
        raise ScoreError(
            f"model.lora_rank={cfg.model.lora_rank} is larger than the model's width ({width}); use at most {width}"
        )
    if lora:  # the reference is the policy with its adapters off (AdaptersOff, below)
        policy = add_lora(policy, cfg.model, seed=t.seed)
    else:
        reference = load_model(model_path, cfg.model, reference_dtype).to(accelerator.device).eval()
        reference.requires_grad_(False)
    check_context(tokenizer, policy.config, problems + heldout, cfg, evaluating=bool(heldout))
    check_step_size(tokenizer, problems, cfg)
    schedule = objectives.stage_schedule(cfg)
    if t.warmup_steps >= len(schedule) and accelerator.is_main_process:
        print(f"warning: train.warmup_steps={t.warmup_steps} is not shorter than the run's {len(schedule)} steps: "
              f"the learning rate never reaches train.lr={t.lr:g}")  # fmt: skip
    if sharded:
        policy = shard_policy(policy.to(accelerator.device))
        if not lora:
            reference = shard_policy(reference)  # frozen, gathered layer by layer in its forward like the policy
        if accelerator.is_main_process:
            print(f"policy sharded with FSDP2 over {world} processes, and the reference")
    else:
        policy = accelerator.prepare_model(policy)
    if lora:
        reference = AdaptersOff(accelerator.unwrap_model(policy))
    # Built after sharding (FSDP2 parameters are DTensors) and not prepared: no loss scaling is ever used
    # (bf16 autocast or a plain dtype), and checkpoints save the optimizer themselves. LoRA: the adapters only.
    trained = [param for param in policy.parameters() if param.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=t.lr, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, len(schedule), t.warmup_steps, t.lr_schedule)
    )

    start = 0
    if checkpoint is not None:
        start = load_checkpoint(accelerator, checkpoint, policy, optimizer, scheduler)
        if accelerator.is_main_process:
            print(f"resuming from {checkpoint} (step {start} of {len(schedule)})")
    first_logged = start + 1 if start else 0  # a run resumed at 0 evaluates and logs its step 0 again
    if accelerator.is_main_process:
        with writing(files.root):
            files.root.mkdir(parents=True, exist_ok=True)
            cfg.save(files.config)
            (files.root / RECORD).write_text(json.dumps(record, indent=1))
            keep_logged_steps(files, before=first_logged)
    accelerator.wait_for_everyone()
    run = Run(cfg, accelerator, files, problems, tokenizer, policy, reference, optimizer, scheduler, schedule,
              start, heldout)  # fmt: skip
    vllm = resolve_engine_name(cfg.rollout.engine) == "vllm"
    if not vllm and cfg.rollout.tis_cap > 0:
        raise ScoreError("rollout.tis_cap corrects the vllm engine's drift; set rollout.engine=vllm or tis_cap=0")
    if vllm or mixed_precision == "bf16":
        # An engine with its own weights in the dtype the trainer computes in, synced after every step: vLLM (one per
        # process), or under bf16 autocast HF's bf16 copy of the fp32 master weights (engines.open_engine)
        dtype = torch.bfloat16 if mixed_precision == "bf16" else policy_dtype
        unwrapped = transformers_model(accelerator.unwrap_model(policy))  # LoRA: the copy is synced merged weights
        run.engine = open_engine(cfg.rollout, model_path, seed=t.seed + rank, dtype=dtype, model=unwrapped)
        if checkpoint is not None:
            sync_engine(run)
    run.tis_cap = resolve_tis_cap(cfg.rollout)
    run.logger = MetricsLogger(files, cfg, enabled=accelerator.is_main_process, purge_step=first_logged)
    if accelerator.is_main_process:  # it decides for all: stop.agreed shares its request
        run.deadline = run_deadline(started, t.time_limit)
    return run


@contextmanager
def sampler(run: Run):
    """What generates: the rollout engine, or else the policy itself with full parameters (models.generation_model)."""
    if run.engine is not None:
        yield run.engine
    else:
        with generation_model(run.accelerator, run.policy) as model:
            yield model


def sync_engine(run: Run) -> None:
    """The rollout engine takes the policy's current full parameters (gathered first when sharded, one tensor at a
    time in the compute dtype: bf16 under bf16 autocast, half the fp32 model). A LoRA policy gives its merged
    weights W + scale x B @ A under the base model's names, rounded once (models.engine_state): new tensors for the
    adapted layers, the policy unchanged."""
    began = clock()
    dtype = torch.bfloat16 if run.accelerator.mixed_precision == "bf16" else None
    run.engine.load_weights(engine_state(run.accelerator, run.policy, dtype))
    run.times["sync"] = clock() - began


def sample_step(run: Run, step: int, reward_fn: RewardFn | None) -> tuple[list[Problem], Rollout]:
    """This process's problems of the step and their scored two-attempt conversations."""
    cfg, accelerator = run.cfg, run.accelerator
    batch = step_problems(
        run.problems, step, cfg.train.batch_size, accelerator.process_index, accelerator.num_processes,
        seed=cfg.data.seed + 1,
    )  # fmt: skip
    if reward_fn is None and cfg.train.reward == "digit":
        reward_fn = digit_reward

    def timed_rewards(texts: list[str], probs: list[Problem]) -> list[float]:
        began = clock()
        if reward_fn is not None:
            scores = reward_fn(texts, probs)
        else:
            scores = problem_rewards(texts, probs, cfg.grader)
        run.times["score"] += clock() - began
        return scores

    began = clock()
    with sampler(run) as model, accelerator.autocast():
        rollout = generate_rollouts(
            model,
            run.tokenizer,
            batch,
            cfg.rollout,
            cfg.prompts,
            attempts=cfg.train.attempts,
            samples_per_prompt=cfg.rollout.samples_per_prompt,
            reward_fn=timed_rewards,
        )
    run.times["generate"] = clock() - began - run.times["score"]
    if run.engine is not None:
        run.engine.sleep()
    return batch, rollout


def accumulate_gradients(run: Run, rollout: Rollout, stage: int) -> tuple[torch.Tensor, dict[str, float]]:
    """Backward passes over the micro-batches; gradients are averaged over processes in the last one.

    Returns the step's sums, already summed over processes (loss, entropy sum, KL sum per attempt), and, when the
    engine gave its log-probs, their drift from the trainer's over all processes' attempt tokens (drift_logp_mean,
    drift_logp_max: mean and max |logp_engine - logp_train|)."""
    t, accelerator, policy = run.cfg.train, run.accelerator, run.policy
    world, device = accelerator.num_processes, accelerator.device
    temperature = run.cfg.rollout.temperature  # tokens are scored under the distribution that sampled them
    advantages = objectives.process_advantages(
        rollout.rewards.to(device),
        accelerator.gather,
        accelerator.process_index,
        stage=stage,
        alpha=t.alpha,
        baseline=t.baseline,
        group_size=run.cfg.rollout.samples_per_prompt,
        gamma=t.gamma,
    )
    kl_coefs = objectives.kl_coefficients(stage, t.attempts, t.beta1, t.beta2)
    units = objectives.loss_units(rollout.attempt_mask, t.loss_aggregation).to(device)
    # DDP and FSDP2 average gradients over processes, so each process divides by global units / world.
    normalizer = accelerator.reduce(units, reduction="sum") / world
    # loss, entropy sum, KL sum per attempt: kept on the device, read once per step
    sums = torch.zeros(2 + t.attempts, device=device, dtype=torch.float64)
    drift = torch.zeros(3, device=device, dtype=torch.float64)  # sum |dlogp|, tokens, max |dlogp|
    pieces = list(micro_batches(rollout, t.micro_batch_size, t.micro_batch_tokens))
    for index, (input_ids, attention_mask, mask, rows) in enumerate(pieces):
        input_ids, attention_mask, mask = input_ids.to(device), attention_mask.to(device), mask.to(device)
        began = clock()
        with torch.no_grad(), accelerator.autocast():
            ref_logits = run.reference(input_ids=input_ids, attention_mask=attention_mask).logits
            ref_logp = objectives.token_logprobs(ref_logits, input_ids, temperature=temperature)
        del ref_logits
        run.times["reference"] += clock() - began
        began = clock()
        with gradient_sync(accelerator, policy, sync=index == len(pieces) - 1), accelerator.autocast():
            logits = policy(input_ids=input_ids, attention_mask=attention_mask).logits
            # entropy (logged) from the same chunked pass over the logits as the log-probs
            logp, entropy = objectives.token_logprobs_and_entropy(logits, input_ids, temperature=temperature)
            del logits  # kept by the graph until the backward pass has used it, freed there
            pg_weights = None
            if rollout.sampler_logprobs is not None:
                sampler_logp = rollout.sampler_logprobs[rows, : input_ids.shape[1]].to(device)
                drift = objectives.add_sampler_drift(drift, logp, sampler_logp, mask)
                if run.tis_cap:
                    pg_weights = objectives.truncated_importance_weights(logp, sampler_logp, run.tis_cap)
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
                pg_weights=pg_weights,
            )
            accelerator.backward(loss)
        with torch.no_grad():
            sums[0] += loss.detach() / world
            sums[1] += (entropy * (mask > 0)).sum()
            sums[2:] += stats["kl_sum"]
        run.times["backward"] += clock() - began
    sums = accelerator.reduce(sums, reduction="sum").cpu()
    if rollout.sampler_logprobs is None:
        return sums, {}
    drift = accelerator.gather(drift.view(1, 3)).cpu()
    mean = (drift[:, 0].sum() / drift[:, 1].sum().clamp(min=1)).item()
    return sums, {"drift_logp_mean": mean, "drift_logp_max": drift[:, 2].max().item()}


def gradient_norm(run: Run) -> float:
    """Global gradient norm, clipped to train.max_grad_norm when that is set (the norm is always computed: a
    finite loss can still give infinite gradients)."""
    from torch.distributed.tensor import DTensor

    max_norm = run.cfg.train.max_grad_norm or math.inf
    norm = run.accelerator.clip_grad_norm_(run.policy.parameters(), max_norm)
    return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)


MAX_WEIGHT_GROWTH = 2.0  # one step that doubles the trained weights' norm has broken the model, not trained it


def weight_norm(run: Run) -> float:
    """The norm of the trained parameters (all processes' shards)."""
    from torch.distributed.tensor import DTensor

    norm = torch.nn.utils.get_total_norm([p.detach() for p in run.policy.parameters() if p.requires_grad])
    return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)


def check_update(run: Run, step: int, before: float, after: float) -> None:
    """A finite loss and gradient can still give an update that blows the weights up (train.lr far too high):
    stop before the next rollout samples from them (NaN probabilities) or a checkpoint keeps them."""
    if not after <= MAX_WEIGHT_GROWTH * before:  # also when `after` is inf or NaN
        saved = run.files.finished_checkpoints()
        kept = f"; {saved[-1]} holds the last good weights" if saved else ""
        raise ScoreError(
            f"step {step + 1}: the update took the trained weights' norm from {before:.3g} to {after:.3g} "
            f"(train.lr={run.cfg.train.lr:g}); lower train.lr{kept}"
        )


def save_due(run: Run, done: int, stage: int) -> None:
    """The checkpoint and stage-end model due after `done` steps (whether or not the last step was skipped)."""
    t, schedule = run.cfg.train, run.schedule
    if (t.save_every and done % t.save_every == 0) or done == len(schedule):
        save_checkpoint(run.accelerator, run.files, run.policy, run.optimizer, run.scheduler, done, stage,
                        t.keep_checkpoints)  # fmt: skip
    if done == len(schedule) or schedule[done] != stage:
        round_index = (done - 1) // (t.stage1_steps + t.stage2_steps) + 1
        target = run.files.root / "stage_ends" / f"round{round_index}_stage{stage}"
        save_model(run.accelerator, run.policy, run.tokenizer, target, run.cfg.model.lora_merge_on_save)


def train(cfg: Config, reward_fn: RewardFn | None = None) -> Path:
    """Run SCoRe training as configured; returns the run folder.

    reward_fn(texts, problems) -> rewards replaces the answer checker (for other tasks, and for tests).
    SIGTERM or SIGUSR1, or a next step that would not end before train.time_limit or the Slurm job's end, stops
    the run at the next step boundary with a checkpoint (raises TrainingStopped).
    """
    with StopRequests() as stop:
        try:
            run = start_run(cfg)
        except BaseException:  # refused at its start: no run folder holding only its lock is left behind
            let_go_if_alone(resolve_path(cfg.train.output_dir) / cfg.train.run_name / ".lock")
            raise
        loop(run, reward_fn, stop)
        finish(run)
    return run.files.root


def watch(run: Run, step: int) -> None:
    """Greedy evaluation of the held-out problems every train.eval_every steps, into metrics.jsonl."""
    t, accelerator = run.cfg.train, run.accelerator
    if run.heldout and (step % t.eval_every == 0 or step == len(run.schedule)):
        # eval.* decide no trained weight: a sampled evaluation must not draw from the rollouts' random streams
        with sampler(run) as model, accelerator.autocast(), random_states_kept():
            metrics = evaluate_heldout(accelerator, model, run.tokenizer, run.heldout, run.cfg)
        run.logger.log({"step": step, **metrics})
        if accelerator.is_main_process and step:
            plot_training(run.files.metrics, run.files.root / "training.png")


def loop(run: Run, reward_fn: RewardFn | None, stop: StopRequests) -> None:
    t, accelerator, logger = run.cfg.train, run.accelerator, run.logger
    bar = progress(total=len(run.schedule), initial=run.start, desc="SCoRe", disable=not accelerator.is_main_process)
    failures = 0
    longest = 0.0  # seconds of the longest step so far, evaluation and saves included
    if run.start == 0:
        watch(run, 0)
    for step in range(run.start, len(run.schedule)):
        began = time.time()
        if received := stop.agreed(accelerator):
            bar.close()
            logger.close()
            stop_at_step_boundary(run, step, received)
        stage = run.schedule[step]
        run.times.update(generate=0.0, score=0.0, reference=0.0, backward=0.0)
        batch, rollout = sample_step(run, step, reward_fn)
        sums, drift = accumulate_gradients(run, rollout, stage)
        loss, grad_norm = sums[0].item(), gradient_norm(run)
        if math.isfinite(loss) and math.isfinite(grad_norm):
            failures = 0
            before = weight_norm(run)
            run.optimizer.step()
            check_update(run, step, before, weight_norm(run))
            run.scheduler.step()
            if run.engine is not None:  # the next rollout samples the updated policy
                sync_engine(run)
            norm = grad_norm if t.max_grad_norm > 0 else None
            record = step_record(
                accelerator,
                rollout,
                batch,
                run.cfg.grader.extraction,
                sums,
                run.times,
                step,
                stage,
                run.scheduler,
                norm,
            )
            logger.log({**record, **drift})
            bar.set_postfix(
                {k: f"{record[k]:.3f}" for k in ("reward_t1", "reward_t2", "kl_t1", "kl_t2") if k in record},
                refresh=False,
            )
        else:
            failures += 1
            reason = "non-finite loss" if not math.isfinite(loss) else "non-finite gradient norm"
            logger.log(
                {"step": step + 1, "stage": stage, "skipped": reason, "loss": str(loss), "grad_norm": str(grad_norm)}
            )
        run.optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        done = step + 1
        watch(run, done)
        if t.sample_every and done % t.sample_every == 0:
            logger.samples(done, stage, batch, rollout)
        save_due(run, done, stage)
        longest = max(longest, time.time() - began)
        if not next_step_fits(time.time(), run.deadline, longest, t.stop_margin):
            stop.time_up()
        if failures >= t.max_nonfinite_steps:
            raise ScoreError(
                f"{failures} non-finite steps in a row at step {done}; the weights are those of the last good "
                f"step, in the newest checkpoint in {run.files.checkpoints}"
            )
    bar.close()


def stop_at_step_boundary(run: Run, done: int, received: str) -> None:
    """Checkpoint the `done` steps (unless that checkpoint exists already) and raise TrainingStopped everywhere."""
    checkpoint = run.files.checkpoints / f"step_{done}"
    if done and checkpoint not in run.files.finished_checkpoints():
        save_checkpoint(run.accelerator, run.files, run.policy, run.optimizer, run.scheduler, done,
                        run.schedule[done - 1], run.cfg.train.keep_checkpoints)  # fmt: skip
    message = f"stopped by {received} after step {done} of {len(run.schedule)}" + (
        f"; checkpoint {checkpoint}, continue with train.resume=true" if done else ""
    )
    if received == TIME_UP_REASON and run.accelerator.is_main_process:
        note_stop(message)
    raise TrainingStopped(message)


def finish(run: Run) -> None:
    accelerator = run.accelerator
    if run.engine is not None:
        run.engine.close()
    if not is_sharded(run.policy):
        check_replicas_agree(accelerator, run.policy)
    save_model(accelerator, run.policy, run.tokenizer, run.files.root / "final", run.cfg.model.lora_merge_on_save)
    run.logger.close()
    if accelerator.is_main_process:
        print(f"run saved to {run.files.root} (final model: {run.files.root / 'final'})")


def check_replicas_agree(accelerator: Accelerator, policy) -> None:
    """Data-parallel replicas must hold the same weights; compare a checksum of every process's copy."""
    if accelerator.num_processes == 1:
        return
    checksum = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    for param in policy.parameters():  # one float64 copy at a time, never the whole model
        value = param.detach().double()
        checksum += torch.stack([value.sum(), (value * value).sum()])
    checksums = accelerator.gather(checksum.view(1, 2))
    if not torch.equal(checksums, checksums[:1].expand_as(checksums)):
        raise ScoreError(f"model weights differ across processes: {checksums.tolist()}")
    if accelerator.is_main_process:
        print(f"weights identical on {accelerator.num_processes} processes")
