"""Watching a run: a fixed held-out set of training problems, evaluated greedily during training.

The held-out problems are the first `train.eval_problems` of the (seeded, shuffled) training problems; they are
taken out of the training set, so the curve shows generalization, not memorization. The evaluation is
evaluate.generate_records (the same code as --task evaluate, with the eval.* settings), split over processes.
"""

from __future__ import annotations

from accelerate import Accelerator

from score.checkpoints import heldout_split
from score.config import Config, ScoreError
from score.data import Problem
from score.distributed import gather_objects, my_share
from score.evaluate import compute_metrics, generate_records
from score.logs import PREFIX

LOGGED = ("accuracy_t1", "accuracy_t2", "delta", "delta_i_to_c", "delta_c_to_i")


def split_heldout(problems: list[Problem], cfg: Config) -> tuple[list[Problem], list[Problem]]:
    """(training problems, held-out problems); nothing is held out when train.eval_every is 0."""
    held = heldout_split(cfg)
    if not held:
        return problems, []
    if held >= len(problems):
        raise ScoreError(
            f"train.eval_problems={held} holds out every one of the {len(problems)} training problems; "
            "lower it (or set train.eval_every=0)"
        )
    return problems[held:], problems[:held]


def evaluate_heldout(accelerator: Accelerator, model, tokenizer, problems: list[Problem], cfg: Config) -> dict:
    """Metrics of the held-out problems (every process evaluates its share), keys prefixed `heldout_`."""
    share = my_share(problems, accelerator.process_index, accelerator.num_processes)
    records = [r for batch in generate_records(model, tokenizer, share, cfg) for r in batch] if share else []
    metrics = compute_metrics(gather_objects(records))
    keys = [*LOGGED, "p_t2_right_given_t1_wrong", "p_t2_wrong_given_t1_right", "answer_changed", "edit_distance"]
    return {PREFIX + "n": metrics["n"], **{PREFIX + k: metrics[k] for k in keys if k in metrics}}
