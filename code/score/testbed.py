"""A CPU testbed where SCoRe's effect can show in minutes: a synthetic addition task and a base model made by SFT.

Task. "What is $473 + 259$?", solved column by column from the right, each column written with its carry-in,
its sum and the answer digits so far, ending in \\boxed{}:
    3+9+0=12 → 2, 7+5+1=13 → 32, 4+2+1=7 → 732. The answer is $\\boxed{732}$.
Level 1 adds two 2-digit numbers, level 2 two 3-digit numbers. Rows look like MATH-500 rows.

Base model. A small Qwen2 (tiny.build_tiny_model) trained by supervised fine-tuning on two-attempt conversations
tokenised exactly as rollouts are (prompts.conversation_pieces + splice), loss on the attempts only. The attempts
come from a simulated base model whose habits (`Habits`) are those the paper reports of real base models, in kind:
  - attempt 1 has a misconception: after a column that sums to exactly 10 it does not carry ("=10" looks like
    nothing is left over). Problems with such a column (kind `trap`) are wrong at attempt 1, sampled or not;
  - attempt 1 also often leaves out the final carry digit (`drop`: 8+5+1=14 → 406). Sampling finds the right
    answer often enough that RL can fix this at attempt 1;
  - attempt 2 mostly repeats attempt 1, keeping its mistakes, and when told there may be an error it tends to
    doubt a column that sums to exactly 9 and carry from it (`nine`): a correct answer breaks;
  - now and then attempt 2 instead re-checks every column ("Let me check each column: ...") and is right.
Greedy decoding follows the likelier habit: the base model is right at attempt 1 on the `nine` and `plain`
problems, and at attempt 2 it loses the `nine` ones (Delta < 0, almost no fixes). The room left to RL: the
dropped carry at attempt 1, and at attempt 2 the rare re-check, the base model's only way to fix a trap. (RL may
still find the trap's carry at attempt 1 from the rare samples that have it: the slip is learned, not enforced.)
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from score import sft, tiny
from score.config import Config, PromptConfig, ScoreError, resolve_path
from score.data import write_atomic
from score.prompts import ConversationPieces, build_messages, conversation_pieces, end_of_turn_id, render

SUBJECT = "Arithmetic"
LEVEL_DIGITS = {1: 2, 2: 3}  # MATH level -> digits of each operand
LEVEL_SHARES = {1: 0.3, 2: 0.7}  # there are few 2-digit problems of each kind
KIND_SHARES = {"trap": 0.3, "drop": 0.25, "nine": 0.15, "plain": 0.3}  # problems by kind (see problem_kind)
MAX_DRAWS = 100_000  # random pairs tried per problem before a kind counts as exhausted
CHECK_OPENER = "Let me check each column: "


@dataclass(frozen=True)
class Habits:
    """Probabilities of the simulated base model's habits (module docstring)."""

    slip: float = 1.0  # attempt 1 writes carry 0 after an inner column that sums to exactly 10
    drop: float = 0.6  # attempt 1 leaves out the final carry digit
    doubt: float = 0.75  # a repeating attempt 2 writes carry 1 after an inner column that sums to exactly 9
    check: float = 0.05  # attempt 2 re-checks every column (and is right) instead of repeating attempt 1
    keep: float = 1.0  # a repeating attempt 2 keeps each slip and drop of attempt 1


def _same(value):
    return value


@dataclass(frozen=True)
class Task:
    """How testbed problems and the simulated attempts are written: MATH-style by default; testbed_code.py writes
    the same sums as code. The habits and the problem kinds stay those of the MATH-style rows."""

    name: str = "testbed"  # what the data and model files say made them
    row: Callable[[dict], dict] = _same  # a MATH-style row -> the row written to the data files
    problem: Callable[[dict], str] = lambda row: row["problem"]  # a MATH-style row -> the problem the model sees
    attempt: Callable[[str], str] = _same  # a MATH-style attempt -> the attempt the base model learns


def digits(n: int) -> list[int]:
    """Decimal digits, ones first."""
    return [int(c) for c in reversed(str(n))]


def true_carries(a: int, b: int) -> list[int]:
    """Carry into each column of a + b (both with the same number of digits)."""
    carries = [0]
    for x, y in zip(digits(a)[:-1], digits(b)[:-1], strict=True):
        carries.append(int(x + y + carries[-1] >= 10))
    return carries


def column_sums(a: int, b: int, carries: list[int]) -> list[int]:
    """Column sums when column i is written with carry-in carries[i]."""
    return [x + y + c for x, y, c in zip(digits(a), digits(b), carries, strict=True)]


def problem_kind(a: int, b: int) -> str:
    """In the correct working: trap if an inner column sums to exactly 10; else drop if the last column carries;
    else nine if an inner column sums to exactly 9; else plain."""
    sums = column_sums(a, b, true_carries(a, b))
    if 10 in sums[:-1]:
        return "trap"
    if sums[-1] >= 10:
        return "drop"
    return "nine" if 9 in sums[:-1] else "plain"


def write_attempt(a: int, b: int, carries: list[int], drop: bool = False, check: bool = False) -> str:
    """The worked solution with the given carry-in per column (and the final carry digit left out when `drop`);
    its answer is what that working gives."""
    steps, so_far = [], ""
    sums = column_sums(a, b, carries)
    for i, (x, y, c, s) in enumerate(zip(digits(a), digits(b), carries, sums, strict=True)):
        last = i == len(sums) - 1
        so_far = (str(s) if last and not drop else str(s % 10)) + so_far
        steps.append(f"{x}+{y}+{c}={s} → {so_far}")
    opener = CHECK_OPENER if check else ""
    return f"{opener}{', '.join(steps)}. The answer is $\\boxed{{{so_far}}}$."


def problem_text(a: int, b: int) -> str:
    return f"What is ${a} + {b}$?"


def operands(row: dict) -> tuple[int, int]:
    """(a, b) of a testbed row."""
    a, b = row["problem"].removeprefix("What is $").removesuffix("$?").split(" + ")
    return int(a), int(b)


def make_problems(
    count: int,
    seed: int,
    split: str,
    exclude: set[tuple[int, int]] = frozenset(),
    distinct: bool = True,
    kinds: dict[str, float] = KIND_SHARES,
) -> list[dict]:
    """`count` MATH-500-style rows (distinct unless `distinct` is false); `kinds` gives the share of each kind
    and LEVEL_SHARES that of each level. Pairs in `exclude` (either order) are never drawn, so a train split can
    avoid the test split."""
    rng = random.Random(seed)
    seen = {tuple(sorted(pair)) for pair in exclude}
    rows = []
    while len(rows) < count:
        level = rng.choices(list(LEVEL_SHARES), weights=list(LEVEL_SHARES.values()))[0]
        kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]
        n = LEVEL_DIGITS[level]
        for _ in range(MAX_DRAWS):
            a, b = rng.randrange(10 ** (n - 1), 10**n), rng.randrange(10 ** (n - 1), 10**n)
            if problem_kind(a, b) == kind and tuple(sorted((a, b))) not in seen:
                break
        else:
            raise ScoreError(f"cannot draw {count} distinct testbed problems: level {level} '{kind}' ones run out")
        if distinct:
            seen.add(tuple(sorted((a, b))))
        rows.append(
            {
                "problem": problem_text(a, b),
                "solution": write_attempt(a, b, true_carries(a, b)),
                "answer": str(a + b),
                "subject": SUBJECT,
                "level": level,
                "unique_id": f"{split}/arithmetic/{len(rows) + 1}.json",
            }
        )
    return rows


def base_attempts(a: int, b: int, rng: random.Random, habits: Habits = Habits()) -> tuple[str, str]:
    """Attempts 1 and 2 of the simulated base model on a + b."""
    da, db = digits(a), digits(b)
    first = [0]
    for i in range(1, len(da)):
        prev = da[i - 1] + db[i - 1] + first[i - 1]
        first.append(0 if prev == 10 and rng.random() < habits.slip else int(prev >= 10))
    drop = rng.random() < habits.drop
    attempt1 = write_attempt(a, b, first, drop=drop)
    if rng.random() < habits.check:
        return attempt1, write_attempt(a, b, true_carries(a, b), check=True)
    second = [0]
    for i in range(1, len(da)):
        prev = da[i - 1] + db[i - 1] + second[i - 1]
        carry = int(prev >= 10)
        if prev == 10 and second == first[:i]:  # still repeating attempt 1, which met the same column
            carry = first[i] if rng.random() < habits.keep else 1 - first[i]
        elif prev == 10 and rng.random() < habits.slip:
            carry = 0
        elif prev == 9 and rng.random() < habits.doubt:
            carry = 1
        second.append(carry)
    drop2 = drop if rng.random() < habits.keep else not drop
    return attempt1, write_attempt(a, b, second, drop=drop2)


def build_tokenizer(
    rows: list[dict], prompts: PromptConfig, habits: Habits, seed: int, vocab_size: int = 512, task: Task = Task()
) -> PreTrainedTokenizerFast:
    """tiny.build_tokenizer with merges learned from rendered testbed conversations (special tokens removed)."""
    rng = random.Random(seed)
    bootstrap = tiny.build_tokenizer([""], vocab_size=vocab_size)  # only for its chat template
    corpus = []
    for row in rows:
        attempts = [task.attempt(text) for text in base_attempts(*operands(row), rng, habits)]
        messages = build_messages(task.problem(row), prompts, attempts)
        text = render(bootstrap, messages[:-1], add_generation_prompt=False)
        for special in (tiny.IM_START, tiny.IM_END):
            text = text.replace(special, "\n")
        corpus.append(text)
    return tiny.build_tokenizer(corpus, vocab_size=vocab_size)


def sft_batch(
    tokenizer, pieces: list[ConversationPieces], attempts: list[tuple[str, ...]], eot: int
) -> dict[str, torch.Tensor]:
    """A batch of whole conversations in the rollout layout (sft.conversation_ids), labels on the attempts."""
    texts = [text for conversation in attempts for text in conversation]
    ids = iter(tokenizer(texts, add_special_tokens=False)["input_ids"])
    conversations = [
        sft.conversation_ids(p, [next(ids) + [eot] for _ in conv], {eot})
        for p, conv in zip(pieces, attempts, strict=True)
    ]
    return sft.conversation_batch(conversations, tokenizer.pad_token_id)


def sft_base_model(
    out_dir: str | Path,
    prompts: PromptConfig,
    exclude: set[tuple[int, int]] = frozenset(),
    seed: int = 0,
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 4e-3,
    problems: int = 6000,
    habits: Habits = Habits(),
    log_every: int = 100,
    task: Task = Task(),
    **shape,
) -> Path:
    """Build the base model into `out_dir`: tokenizer, tiny Qwen2 (`shape`: tiny.build_tiny_model's sizes), then
    `steps` AdamW steps (warm-up, cosine decay) of SFT on the simulated base model's conversations about
    `problems` problems (none in `exclude`), fresh attempts every time a problem comes back.

    Seeded: the same arguments give the same weights on the same machine and torch build.
    """
    rows = make_problems(problems, seed=seed + 2, split="sft", exclude=exclude, distinct=False)
    tokenizer = build_tokenizer(rows[:300], prompts, habits, seed, task=task)
    path = tiny.build_tiny_model(out_dir, tokenizer, seed=seed, **shape)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    eot = end_of_turn_id(tokenizer, prompts)
    pieces = [conversation_pieces(tokenizer, task.problem(row), prompts, attempts=2) for row in rows]
    pairs = [operands(row) for row in rows]

    rng = random.Random(seed + 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * s / steps)))
    )
    model.train()
    began, smoothed = time.perf_counter(), None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in range(1, steps + 1):
            chosen = [rng.randrange(len(rows)) for _ in range(batch_size)]
            attempts = [tuple(map(task.attempt, base_attempts(*pairs[i], rng, habits))) for i in chosen]
            batch = sft_batch(tokenizer, [pieces[i] for i in chosen], attempts, eot)
            loss = sft.supervised_step(model, optimizer, [batch], max_grad_norm=1.0)
            schedule.step()
            smoothed = loss if smoothed is None else 0.9 * smoothed + 0.1 * loss
            if log_every and (step % log_every == 0 or step == steps):
                print(f"sft step {step}/{steps}: loss {smoothed:.4f} ({time.perf_counter() - began:.0f}s)", flush=True)
    model.save_pretrained(path)
    info = {
        "made_by": "score.testbed.sft_base_model",
        "task": task.name,
        "habits": asdict(habits),
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "problems": problems,
        "seed": seed,
        "final_loss": smoothed,
        "seconds": round(time.perf_counter() - began, 1),
    }
    (path / "testbed.json").write_text(json.dumps(info, indent=2))
    return path


def build_testbed(
    cfg: Config,
    train_problems: int = 2000,
    test_problems: int = 200,
    seed: int = 0,
    task: Task = Task(),
    **budget,
) -> None:
    """Write the test split (eval.source), the train split (data.source) and the SFT base model
    (<model.base_dir>/<model.name>) of `task`; parts already there are kept. `budget`: sft_base_model's budget
    arguments."""
    for key, source in (("data.source", cfg.data.source), ("eval.source", cfg.eval.source)):
        if not source.endswith(".jsonl"):
            raise ScoreError(
                f"{key}: the testbed writes its problems as JSONL files; give a .jsonl path, not {source!r}"
            )
    test = make_problems(test_problems, seed=seed, split="test")
    held_out = {operands(row) for row in test}
    train = make_problems(train_problems, seed=seed + 1, split="train", exclude=held_out)
    for source, rows in ((cfg.eval.source, test), (cfg.data.source, train)):
        path = resolve_path(source)
        if path.exists():
            print(f"data: {path} already there")
            continue
        write_atomic(path, "".join(json.dumps(task.row(row)) + "\n" for row in rows))
        print(f"data: {len(rows)} testbed problems -> {path}")
    target = resolve_path(cfg.model.base_dir) / cfg.model.name
    if target.is_dir():
        print(f"model: {target} already built")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model = sft_base_model(tmp / "model", cfg.prompts, exclude=held_out, seed=seed, task=task, **budget)
        os.replace(model, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"model: testbed base model -> {target}")
