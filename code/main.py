"""SCoRe command line: download, train, evaluate, push.

    python code/main.py --task download            # base model + MATH into base_models/, data/
    python code/main.py --task train               # Stage I then Stage II -> saved_models/<run>/
    python code/main.py --task evaluate            # two-attempt evaluation, paper metrics
    python code/main.py --task push --set push.repo=owner/name   # final/ and its model card -> the hub

Every setting lives in a YAML config (configs/default.yaml); `--set section.key=value` overrides one.

Exit status: 0 done, 1 error (one line), 2 bad config or arguments, 75 training stopped by SIGTERM/SIGUSR1
after saving a checkpoint (resume with `--set train.resume=true`), 130 interrupted (Ctrl-C), 143 stopped by SIGTERM
outside a training step (an evaluation carries on from the problems it wrote when run again).
"""

import argparse
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from score.config import REPO_ROOT, ScoreError, load_config  # noqa: E402
from score.preemption import STOPPED_EXIT_CODE, TrainingStopped  # noqa: E402

TASKS = {
    "download": "fetch the base model (model.name) and MATH with the MATH-500 ids; with download.builtin, "
    "build the embedded tiny model and sample problems instead (no network)",
    "train": "run SCoRe: Stage I then Stage II (train.*), writing saved_models/<run_name>/",
    "evaluate": "two-attempt evaluation (eval.*) with the paper's metrics table",
    "experiment": "the paper's comparison over several seeds (experiment.*): base, Self-Refine, STaR, Pair-SFT, "
    "ablations and SCoRe; mean and std table, paired differences",
    "push": "upload a trained model folder with its model card to the Hugging Face Hub (push.*: push.repo=owner/name)",
}


class Terminated(BaseException):
    """SIGTERM outside training's own handling (which finishes the step and checkpoints): end the task as Ctrl-C
    does, through every `finally`, so that worker pools and process groups are shut down, not orphaned."""


def _terminate(signum: int, frame) -> None:
    raise Terminated


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="SCoRe: training language models to self-correct via multi-turn RL (Kumar et al., 2024).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="tasks:\n"
        + "\n".join(f"  {name:<9} {text}" for name, text in TASKS.items())
        + f"\n\nexit status {STOPPED_EXIT_CODE}: training stopped by SIGTERM or SIGUSR1, or before "
        "train.time_limit or the Slurm job's end, after saving a checkpoint "
        "(continue with --set train.resume=true)",
    )
    parser.add_argument("--task", required=True, choices=list(TASKS), help="what to run (see below)")
    parser.add_argument(
        "--config",
        default=str(REPO_ROOT / "configs" / "default.yaml"),
        help="YAML config; relative paths inside it resolve from the repository root (default: configs/default.yaml)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set train.lr=1e-5 (repeatable)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = Path(args.config)
    if not config.exists():  # `--config configs/tiny.yaml` works from any working directory
        config = REPO_ROOT / config
    try:
        cfg = load_config(config, args.overrides)
    except ScoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # per-file loading bars would drown our own
    from score.distributed import end_processes

    finished = False
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.task == "download":
            from score.download import download

            download(cfg)
        elif args.task == "train":
            from score.card import train_with_card

            train_with_card(cfg)
        elif args.task == "evaluate":
            from score.card import evaluate_with_card

            evaluate_with_card(cfg)
        elif args.task == "push":
            from score.push import push

            push(cfg)
        else:
            from score.experiment import run_experiment

            run_experiment(cfg)
        finished = True
    except ScoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except TrainingStopped as e:
        finished = True  # every process stopped after the same step, with its checkpoint saved
        print(e, file=sys.stderr)
        return STOPPED_EXIT_CODE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("stopped by SIGTERM", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        end_processes(clean=finished)
    return 0


if __name__ == "__main__":
    sys.exit(main())
