"""The paper's supervised baselines (Kumar et al., 2024, arXiv 2409.12917, Section 4 and Table 1: STaR and Pair-SFT,
each on a dataset D and an extended D+), fine-tuned by sft.py on self-generated data:

  STaR      each round: sample `sft.samples` two-attempt conversations per problem from the latest model and keep
            D_STaR, the traces whose attempt 1 is wrong and attempt 2 right (sft.dataset=d), or D+_STaR, those plus
            the right -> right traces (d_plus); fine-tune on them (`sft.rounds` rounds). As in STaR (Zelikman et
            al., 2022, Algorithm 1) every round's fine-tuning starts again from the start model with a fresh
            optimizer (sft.star_restart; false: it continues from the last round's weights and optimizer);
  Pair-SFT  sample first attempts from the base model and build D_SFT: every wrong one paired with a right attempt
            to the same problem (drawn at random); D+_SFT also pairs every right one with a right attempt to the
            same problem (itself included, so a problem solved once still gives its right -> right pair); fine-tune
            the base model on the conversation (problem, attempt, correction instruction, right attempt).

Both learn attempt 2 only unless sft.train_first_attempt (Pair-SFT's attempt 1 is wrong by construction). The
sampled ids are spliced into the conversation layout unchanged (sft.conversation_ids), as in RL. A run writes
<run>/final/ (the model), metrics.jsonl and TensorBoard like a training run: one line per sampling round
(reward_t1, reward_t2, kept) and one per supervised step (loss). A finished run (final/ present) is reused; an
interrupted one starts over. Sampling goes through rollout.engine like training: a vLLM engine is synced with the
fine-tuned weights after every round.
"""

from __future__ import annotations

import random
import shutil
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import AutoTokenizer

from score import sft
from score.checkpoints import RunFiles, save_atomically
from score.config import Config
from score.data import Problem, training_problems
from score.domains import problem_rewards
from score.engines import open_engine
from score.logs import MetricsLogger, transition_rates
from score.models import load_model, weight_dtypes
from score.prompts import conversation_pieces
from score.rollout import Rollout, generate_rollouts, stop_token_ids
from score.trainer import step_problems


class SupervisedRun:
    """What STaR and Pair-SFT share: the model being fine-tuned, its optimizer, problems, logs and step count."""

    def __init__(self, cfg: Config, root: Path, start_model: Path):
        self.cfg, self.files = cfg, RunFiles(root)
        shutil.rmtree(root, ignore_errors=True)  # an unfinished run starts over
        root.mkdir(parents=True)
        cfg.save(root / "config.yaml")
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        torch.manual_seed(cfg.train.seed)
        self.tokenizer = AutoTokenizer.from_pretrained(start_model)
        weights, _, mixed_precision = weight_dtypes(cfg.model, on_gpu=self.device == "cuda")  # as training does
        self.bf16_autocast = mixed_precision == "bf16"
        self.start_model, self.weights = start_model, weights
        self.model = load_model(start_model, cfg.model, weights).to(self.device)
        self.optimizer = self.new_optimizer()
        dtype = torch.bfloat16 if self.bf16_autocast else weights  # what the model computes in
        self.engine = open_engine(cfg.rollout, start_model, seed=cfg.train.seed, dtype=dtype, model=self.model)
        self.stop_ids = stop_token_ids(self.model.generation_config, self.tokenizer, cfg.prompts)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.rng = random.Random(cfg.train.seed)
        self.logger = MetricsLogger(self.files, cfg, enabled=True)
        self.step = 0
        self.problems = training_problems(cfg.data)

    def new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.model.parameters(), lr=self.cfg.sft.lr, weight_decay=0.0)

    def restart(self) -> None:
        """Back to the start model's weights, loaded in place (an HF engine samples this very module), with a
        fresh optimizer."""
        self.model.load_state_dict(load_model(self.start_model, self.cfg.model, self.weights).state_dict())
        self.optimizer = self.new_optimizer()

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16_autocast else nullcontext()

    def round_problems(self, index: int, count: int) -> list[Problem]:
        """Round `index`'s problems: a seeded pass over the training problems (all of them when count is 0)."""
        count = count or len(self.problems)
        return step_problems(self.problems, index, count, rank=0, world=1, seed=self.cfg.data.seed + 1)

    def sample(self, problems: list[Problem], attempts: int) -> Rollout:
        cfg = self.cfg
        with self.autocast():
            return generate_rollouts(
                self.engine,
                self.tokenizer,
                problems,
                cfg.rollout,
                cfg.prompts,
                attempts=attempts,
                samples_per_prompt=cfg.sft.samples,
                reward_fn=lambda texts, probs: problem_rewards(texts, probs, cfg.grader),
            )

    def log_sampling(self, round_index: int, rollout: Rollout, kept: int) -> None:
        record = {"step": self.step, "stage": "sample", "round": round_index, "sampled": len(rollout.texts)}
        for k in range(rollout.rewards.shape[1]):
            record[f"reward_t{k + 1}"] = rollout.rewards[:, k].mean().item()
        if rollout.rewards.shape[1] > 1:
            record["i_to_c"], record["c_to_i"] = transition_rates(rollout.rewards)
        record["kept"] = kept
        self.logger.log(record)
        print(f"round {round_index}: kept {kept} of {len(rollout.texts)} sampled conversations", flush=True)

    def finetune(self, conversations: list[sft.Conversation], steps: int) -> None:
        def log(step: int, loss: float) -> None:
            self.logger.log({"step": self.step + step, "stage": "sft", "loss": loss, "lr": self.cfg.sft.lr})

        trained = {1, 2} if self.cfg.sft.train_first_attempt else {2}
        if conversations:
            with self.autocast():
                sft.finetune(
                    self.model,
                    conversations,
                    self.pad_id,
                    self.optimizer,
                    steps,
                    self.cfg.sft.batch_size,
                    self.cfg.sft.micro_batch_size,
                    self.rng,
                    trained=trained,
                    max_grad_norm=self.cfg.sft.max_grad_norm,
                    log=log,
                )
            self.step += steps
        else:  # the model stays as it is (after a restart: the start model), and the engine must sample it
            print("nothing to fine-tune on this round", flush=True)
        if self.engine.holds_weights:  # the next round samples the fine-tuned model
            self.engine.load_weights(self.model.state_dict())

    def save(self) -> Path:
        """final/ (its model card is card.py's, written by the caller)."""
        final = self.files.root / "final"

        def write(tmp: Path) -> None:
            self.model.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)

        save_atomically(final, write)
        self.engine.close()
        self.logger.close()
        print(f"run saved to {self.files.root} (final model: {final})")
        return final


def star_rows(rewards: torch.Tensor, dataset: str) -> list[int]:
    """The rows STaR keeps from two-attempt rewards (rows x attempts): D, wrong -> right; D+, also right -> right
    (every row whose attempt 2 is right)."""
    right = rewards > 0.5
    keep = right[:, 1] if dataset == "d_plus" else right[:, 1] & ~right[:, 0]
    return torch.nonzero(keep).flatten().tolist()


def run_star(cfg: Config, root: Path, start_model: Path) -> Path:
    """STaR for self-correction from `start_model`; returns the final model folder."""
    if (root / "final" / "config.json").is_file():
        return root / "final"
    run = SupervisedRun(cfg, root, start_model)
    for index in range(cfg.sft.rounds):
        rollout = run.sample(run.round_problems(index, cfg.sft.problems), attempts=2)
        kept = star_rows(rollout.rewards, cfg.sft.dataset)
        run.log_sampling(index + 1, rollout, len(kept))
        if cfg.sft.star_restart and index > 0:  # round 1 starts from the start model anyway
            run.restart()
        run.finetune(sft.rollout_conversations(rollout, kept), cfg.sft.steps)
    return run.save()


def pair_conversations(
    rollout: Rollout, problems: list[Problem], pieces: list, stop_ids: set[int], rng: random.Random, dataset: str
) -> list[sft.Conversation]:
    """D: every wrong first attempt, paired with a right first attempt (drawn at random) to the same problem; D+:
    then every right one too, paired the same way."""
    by_problem: dict[int, tuple[list[int], list[int]]] = {}
    for r in range(len(rollout.texts)):
        wrong, right = by_problem.setdefault(int(rollout.problem_index[r]), ([], []))
        (right if rollout.rewards[r, 0] > 0.5 else wrong).append(r)
    conversations = []
    for i, (wrong, right) in sorted(by_problem.items()):
        firsts = wrong + right if dataset == "d_plus" else wrong
        for r in firsts if right else []:
            attempts = [sft.attempt_ids(rollout, r, 1), sft.attempt_ids(rollout, rng.choice(right), 1)]
            conversations.append(sft.conversation_ids(pieces[i], attempts, stop_ids))
    return conversations


def run_pair_sft(cfg: Config, root: Path, base_model: Path) -> Path:
    """Pair-SFT of the base model, with STaR's sampling and step budget in one round; returns the final model."""
    if (root / "final" / "config.json").is_file():
        return root / "final"
    run = SupervisedRun(cfg, root, base_model)
    problems = run.round_problems(0, cfg.sft.rounds * cfg.sft.problems)
    rollout = run.sample(problems, attempts=1)
    pieces = [conversation_pieces(run.tokenizer, p.problem, cfg.prompts, attempts=2) for p in problems]
    conversations = pair_conversations(rollout, problems, pieces, set(run.stop_ids), run.rng, cfg.sft.dataset)
    run.log_sampling(1, rollout, len(conversations))
    run.finetune(conversations, cfg.sft.rounds * cfg.sft.steps)
    return run.save()
