"""Typed configuration: dataclasses with a help string per field, loaded from YAML.

Unknown keys, wrong types and impossible values are errors that name the key and the file.
Relative paths in a config resolve from the repository root, wherever the command runs.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]

FIRST_TURN_PROMPT = (
    "You are a math expert. When you respond, respond only with the Solution of the final Problem, "
    "thinking step by step. At the end of the Solution, when you give your final answer, write it "
    'in the form "Final Answer: The final answer is $answer$. I hope it is correct."'
)
CORRECTION_PROMPT = (
    "There might be an error in the solution above because of lack of understanding of the "
    "question. Please correct the error, if any, and rewrite the solution. Only output the final "
    "solution! At the end of the Solution, when you give your final answer, write it in the form "
    '"Final Answer: The final answer is $answer$. I hope it is correct."'
)

SELF_REFINE_PROMPT = (
    "Review your solution above step by step and point out any error in it. Then write the corrected "
    "solution in full; if there is no error, repeat the solution. At the end of the Solution, when you give your "
    'final answer, write it in the form "Final Answer: The final answer is $answer$. I hope it is correct."'
)
ROWS = (
    "base", "self_refine", "star", "star_plus", "pair_sft", "pair_sft_plus", "single_turn", "stage2_no_shaping",
    "stage2_shaping", "score", "score_star_stage2",
)  # fmt: skip
TRACKERS = ("tensorboard", "wandb", "trackio", "mlflow")  # train.report_to
SUPERVISED_ROWS = ("star", "star_plus", "pair_sft", "pair_sft_plus", "score_star_stage2")  # fine-tuned by sft.*


class ScoreError(Exception):
    """A user-facing error: printed as one line, no traceback."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none), for one-line reports."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def resolve_path(path: str | Path) -> Path:
    """Absolute paths stay; relative ones are taken from the repository root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


# Which results a setting decides (its field's metadata "decides"; provenance.py compares them): the weights an RL
# run trains (a resume must keep them), those a supervised baseline trains, an evaluation's generations. A setting
# that decides none (paths, logging, saving, parallelism) may change freely between a run and its resume.
TRAIN, SFT, EVAL = "train", "sft", "eval"


def _help(text: str, default, decides: tuple[str, ...]):
    metadata = {"help": text, "decides": decides}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ModelConfig:
    name: str = _help(
        "Hub id (downloaded into base_dir/<name>) or a local model folder.",
        "Qwen/Qwen2.5-1.5B-Instruct",
        decides=(TRAIN,),
    )
    base_dir: str = _help("Where --task download puts base models.", "base_models", decides=())
    dtype: str = _help(
        "Weights dtype: auto (bf16 on GPU, fp32 on CPU), bfloat16, float16 (GPU only) or float32.",
        "auto",
        decides=(TRAIN,),
    )
    reference_dtype: str = _help(
        "Reference model weights: auto (as the policy's: the same numeric path, KL exactly 0 before any update) or "
        "bfloat16 (half the memory; its log-probs differ from the policy's by rounding, so the step-0 KL is not 0).",
        "auto",
        decides=(TRAIN,),
    )
    gradient_checkpointing: bool = _help(
        "Recompute activations in the backward pass to save memory (the policy trains in train mode, dropout off).",
        False,
        decides=(TRAIN,),
    )
    attn_implementation: str = _help(
        "Attention kernel: sdpa, eager, flash_attention_2 or flash_attention_3 (those two need their package).",
        "sdpa",
        decides=(TRAIN, EVAL),
    )
    lora_rank: int = _help(
        "LoRA (peft): rank r of the adapters the policy trains instead of its weights; the reference is the same "
        "model with the adapters disabled (no second copy). 0: off, full fine-tuning.",
        0,
        decides=(TRAIN,),
    )
    lora_alpha: float = _help(
        "LoRA scale numerator: an adapter adds (lora_alpha / lora_rank) x B @ A to W.", 32.0, decides=(TRAIN,)
    )
    lora_dropout: float = _help(
        "Dropout on the adapters' input in the update's forward passes (sampling runs without it), in [0, 1).",
        0.0,
        decides=(TRAIN,),
    )
    lora_target_modules: list[str] = _help(
        "Names of the linear layers that get adapters (Qwen2 / Llama names; all-linear: every linear layer but "
        "the output layer).",
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        decides=(TRAIN,),
    )
    lora_merge_on_save: bool = _help(
        "Saved models (final/, stage_ends/) hold the merged weights W + scale x B @ A as a plain model, which "
        "evaluation and vLLM load, and the adapter in <folder>/adapter/; false: the folder holds the adapter only.",
        False,
        decides=(),
    )


@dataclass
class DataConfig:
    source: str = _help(
        "MATH folder (tar layout), a .jsonl/.json/.parquet file, or a hub dataset id.", "data/MATH", decides=(TRAIN,)
    )
    scheme: str = _help(
        "Split scheme for the tar layout: paper (train 12,000 / test MATH-500) or full (7,500 / 5,000).",
        "paper",
        decides=(TRAIN,),
    )
    math500_ids: str = _help(
        "File listing the MATH-500 unique ids, written by --task download.", "data/math500_ids.txt", decides=(TRAIN,)
    )
    subjects: list[str] = _help("Keep only these subjects (empty: all).", [], decides=(TRAIN,))
    levels: list[int] = _help("Keep only these levels 1-5 (empty: all).", [], decides=(TRAIN,))
    max_problems: int = _help("Keep at most this many training problems after shuffling (0: all).", 0, decides=(TRAIN,))
    seed: int = _help("Seed of the training-problem shuffle.", 0, decides=(TRAIN,))


@dataclass
class PromptConfig:
    first_turn: str = _help(
        "Instruction placed before the problem in the first user turn.", FIRST_TURN_PROMPT, decides=(TRAIN, EVAL)
    )
    correction: str = _help("Correction instruction p, the second user turn.", CORRECTION_PROMPT, decides=(TRAIN, EVAL))
    system: str = _help("System message (empty: the chat template's default).", "", decides=(TRAIN, EVAL))
    self_refine: str = _help(
        "Second user turn of the self_refine experiment row (critique, then revise), in place of `correction`.",
        SELF_REFINE_PROMPT,
        decides=(EVAL,),
    )


@dataclass
class RolloutConfig:
    max_new_tokens: int = _help("Token budget of each attempt.", 1024, decides=(TRAIN,))
    temperature: float = _help("Sampling temperature during training (paper: 1.0).", 1.0, decides=(TRAIN,))
    top_p: float = _help("Nucleus sampling threshold during training.", 1.0, decides=(TRAIN, EVAL))
    samples_per_prompt: int = _help(
        "Conversations sampled per problem per step (>=2 for the leave-one-out baseline).", 2, decides=(TRAIN,)
    )
    generation_batch_size: int = _help("Conversations generated together per process.", 64, decides=(TRAIN,))
    engine: str = _help(
        "What samples rollouts and evaluations: hf (padded generate), vllm (colocated vLLM, weights synced after "
        "every optimizer step) or auto (vllm when it is installed and a GPU is present, else hf).",
        "auto",
        decides=(TRAIN, EVAL),
    )
    hf_compile: str = _help(
        "hf engine: static KV cache and a compiled decode step, batches padded to a few bucketed shapes (on, off, "
        "or auto: on for a CUDA model, off on a CPU).",
        "auto",
        decides=(TRAIN, EVAL),
    )
    vllm_gpu_memory_utilization: float = _help(
        "Fraction of the GPU's memory vLLM may take (weights + KV cache); the training state needs the rest.",
        0.3,
        decides=(TRAIN,),
    )
    vllm_max_model_len: int = _help(
        "Longest conversation (prompt and every attempt) the vLLM engine holds (0: the model's own limit).",
        4096,
        decides=(TRAIN,),
    )
    vllm_sleep: bool = _help(
        "Free vLLM's KV cache while the policy is updated (sleep level 1, GPU only); costs a re-allocation per step.",
        False,
        decides=(TRAIN,),
    )
    tis_cap: float = _help(
        "Truncated importance sampling: weight each token's policy-gradient term by min(pi_train / pi_sampler, cap) "
        "to correct the sampler's numerical drift (vllm engine; 0: off; -1: 2 with the vllm engine, 0 with hf).",
        -1.0,
        decides=(TRAIN,),
    )


@dataclass
class TrainConfig:
    run_name: str = _help("Folder name under output_dir for this run.", "score", decides=())
    output_dir: str = _help("Where runs are written.", "saved_models", decides=())
    stage1_steps: int = _help(
        "Stage I steps per round (0: skip Stage I, the 'without Stage I' ablation).", 1500, decides=(TRAIN,)
    )
    stage2_steps: int = _help("Stage II steps per round.", 1500, decides=(TRAIN,))
    rounds: int = _help("Repetitions of (Stage I, Stage II); the paper's first version used 2.", 1, decides=(TRAIN,))
    attempts: int = _help(
        "2 for SCoRe; 1 trains single-attempt RL on r(y1) (the 'without multi-turn' ablation).", 2, decides=(TRAIN,)
    )
    batch_size: int = _help(
        "Problems per optimizer step over all processes (paper: 512 MATH, 128 MBPP).", 512, decides=(TRAIN,)
    )
    micro_batch_size: int = _help("Conversations per forward/backward pass per process.", 4, decides=(TRAIN,))
    micro_batch_tokens: int = _help(
        "Token budget of a forward/backward pass (rows x longest row): conversations sorted by length, as many per "
        "pass as fit, so like lengths share one and little is padding; 0: micro_batch_size consecutive ones. "
        "Not with FSDP2.",
        0,
        decides=(TRAIN,),
    )
    lr: float = _help("AdamW learning rate (paper: 5e-6 MATH, 1e-5 MBPP).", 5e-6, decides=(TRAIN,))
    weight_decay: float = _help("AdamW weight decay.", 0.0, decides=(TRAIN,))
    warmup_steps: int = _help("Linear learning-rate warm-up steps, then lr_schedule.", 0, decides=(TRAIN,))
    lr_schedule: str = _help(
        "Learning rate after the warm-up: constant, linear (to 0 at the last step) or cosine (to 0).",
        "constant",
        decides=(TRAIN,),
    )
    max_grad_norm: float = _help("Gradient clipping norm (0: off).", 1.0, decides=(TRAIN,))
    alpha: float = _help("Reward-shaping coefficient of Stage II (0: no shaping ablation).", 10.0, decides=(TRAIN,))
    beta1: float = _help("KL coefficient on attempts not held by beta2.", 0.01, decides=(TRAIN,))
    beta2: float = _help(
        "Stage I KL coefficient on the first attempt (paper: 0.1 MATH, 0.25 MBPP).", 0.1, decides=(TRAIN,)
    )
    kl_estimator: str = _help(
        "Per-token KL estimator: k1 (log ratio) or k3 (unbiased, non-negative).", "k3", decides=(TRAIN,)
    )
    kl_mode: str = _help(
        "How the KL to the reference enters: loss (a per-token penalty in the loss; its gradient holds each prefix "
        "fixed, biased for the KL of a whole attempt) or reward (the k1 log ratio in the return with reward-to-go "
        "inside each attempt; exact in expectation).",
        "loss",
        decides=(TRAIN,),
    )
    gamma: float = _help(
        "Discount from attempt 2 to attempt 1 in Stage II: attempt 1's return is r1 + gamma x attempt 2's shaped "
        "reward. 0 (per-attempt credit): shaping only weights r2 by 1 + alpha; > 0: alpha also pays attempt 1 "
        "for being wrong (see README).",
        0.0,
        decides=(TRAIN,),
    )
    baseline: str = _help(
        "Reward baseline: loo (leave-one-out over a problem's samples), batch or none.", "loo", decides=(TRAIN,)
    )
    loss_aggregation: str = _help(
        "token_mean over the global batch, or seq_mean (mean per attempt, then batch).", "token_mean", decides=(TRAIN,)
    )
    seed: int = _help("Random seed.", 0, decides=(TRAIN,))
    save_every: int = _help("Checkpoint every this many steps (0: only at the end).", 100, decides=())
    keep_checkpoints: int = _help("Newest checkpoints kept on disk.", 2, decides=())
    sample_every: int = _help("Log sample conversations every this many steps (0: never).", 50, decides=())
    eval_every: int = _help(
        "Evaluate the held-out problems (eval.* settings, greedy by default) every this many steps, and before "
        "the first and after the last (0: off, nothing held out).",
        0,
        decides=(),
    )
    eval_problems: int = _help(
        "Training problems held out (never trained on) for eval_every; taken when eval_every > 0.", 100, decides=()
    )
    resume: bool = _help("Continue from the latest checkpoint of the run.", False, decides=())
    max_nonfinite_steps: int = _help(
        "Stop after this many skipped steps (non-finite loss or gradient norm) in a row.", 3, decides=()
    )
    time_limit: float = _help(
        "Seconds this run may train (0: no limit): it stops with a checkpoint, to resume, once its longest step "
        "so far and stop_margin would not end in time. Under Slurm the job's end time is such a limit too.",
        0.0,
        decides=(),
    )
    stop_margin: float = _help(
        "Seconds kept before the time limit for the last checkpoint and the exit.", 120.0, decides=()
    )
    reward: str = _help(
        "answer: the answer checker (the paper). digit: 1 when an attempt contains a digit, a stand-in a random "
        "tiny model earns, so CPU smoke runs (configs/tiny.yaml) change the weights.",
        "answer",
        decides=(TRAIN,),
    )
    report_to: list[str] = _help(
        "Experiment trackers that get every metrics.jsonl record, the config and the held-out table: tensorboard "
        "(<run>/tensorboard/), wandb, trackio, mlflow (each package installed by you and set up by its own "
        "environment variables; README, Experiment trackers); []: metrics.jsonl only.",
        ["tensorboard"],
        decides=(),
    )


@dataclass
class EvalConfig:
    model: str = _help(
        "Model to evaluate: folder or hub id (empty: <output_dir>/<run_name>/final of this config).", "", decides=()
    )
    source: str = _help("Test problems (empty: data.source with the test split of data.scheme).", "", decides=())
    name: str = _help("Evaluation name: folder under <run>/eval/ (empty: derived from the data).", "", decides=())
    attempts: int = _help("Sequential attempts per problem.", 2, decides=(EVAL,))
    temperature: float = _help("0 for greedy decoding (paper), else sampling temperature.", 0.0, decides=(EVAL,))
    max_new_tokens: int = _help("Token budget of each attempt.", 1024, decides=(EVAL,))
    batch_size: int = _help("Problems generated together.", 64, decides=())
    max_problems: int = _help("Evaluate at most this many problems (0: all).", 0, decides=())
    compare: list[str] = _help("Evaluation folders to show side by side with this one.", [], decides=())
    samples: int = _help(
        "Sampled conversations per problem besides the greedy one, for pass@k, majority@k and the equal-budget "
        "comparison of k first attempts against k/2 two-attempt conversations (1: none).",
        1,
        decides=(EVAL,),
    )
    sample_temperature: float = _help("Sampling temperature of the eval.samples conversations.", 1.0, decides=(EVAL,))
    seed: int = _help(
        "Seed of the sampled conversations (a resumed evaluation draws the rest anew).", 0, decides=(EVAL,)
    )


@dataclass
class GraderConfig:
    timeout: float = _help("Seconds allowed per answer comparison; a timeout counts as wrong.", 2.0, decides=(TRAIN,))
    workers: int = _help("Processes that grade a batch (0: one per CPU core).", 0, decides=())
    code_timeout: float = _help(
        "Seconds a code answer's program and its tests may run in the sandbox (score/code/); past it: wrong.",
        5.0,
        decides=(TRAIN,),
    )
    code_without_jail: bool = _help(
        "Run code answers WITHOUT bubblewrap's jail where it cannot isolate (no bwrap, no user namespaces): each "
        "program still gets a fresh interpreter, limits and a seccomp filter, but sees every file you can. Off: "
        "code rewards refuse to start there, in one line naming what is missing.",
        False,
        decides=(),  # where a program runs, not what an honest program scores
    )
    extraction: str = _help(
        "Where the final answer is read: strict (explicit markers only: \\boxed{}, 'the answer is N', '#### N', "
        "'Answer:' lines, <answer> tags, a JSON 'answer'; README lists them) or lenient (also the value the last "
        "sentence states; for models not trained on the format).",
        "strict",
        decides=(TRAIN, EVAL),
    )


@dataclass
class DownloadConfig:
    math_url: str = _help(
        "URL of the original MATH.tar.", "https://people.eecs.berkeley.edu/~hendrycks/MATH.tar", decides=()
    )
    math_hub: str = _help(
        "Hub dataset used when math_url is empty or fails (per-subject configs).",
        "EleutherAI/hendrycks_math",
        decides=(),
    )
    math500_hub: str = _help(
        "Hub dataset that defines MATH-500 (its unique_id column).", "HuggingFaceH4/MATH-500", decides=()
    )
    data_dir: str = _help("Where MATH is extracted.", "data", decides=())
    model: bool = _help("Download the base model.", True, decides=())
    math: bool = _help("Download MATH and the MATH-500 id list.", True, decides=())
    mbpp: bool = _help("Download MBPP into <data_dir>/mbpp/{train,test,validation,prompt}.jsonl.", False, decides=())
    mbpp_hub: str = _help(
        "Hub dataset of MBPP (its 'full' config: the paper's train / test split).",
        "google-research-datasets/mbpp",
        decides=(),
    )
    builtin: str = _help(
        "Build locally instead of downloading (no network): tiny (random tiny model + sample problems), "
        "testbed (synthetic addition task + SFT base model, see score/testbed.py), testbed-code (the same sums as "
        "functions to write, scored by running them: score/testbed_code.py), or empty.",
        "",
        decides=(),
    )


@dataclass
class ExperimentConfig:
    name: str = _help("Folder under train.output_dir for --task experiment.", "experiment", decides=())
    seeds: list[int] = _help("Seeds of every trained row.", [0, 1, 2], decides=())
    rows: list[str] = _help(
        "Rows: base, self_refine (base model, critique-then-revise turn), star (STaR on D: traces whose attempt 1 "
        "is wrong and attempt 2 right), star_plus (STaR on D+: also right -> right traces), pair_sft (a wrong "
        "attempt paired with a right one), pair_sft_plus (also right paired with right), single_turn (RL on attempt 1 "
        "only), stage2_no_shaping (direct multi-turn RL), stage2_shaping, score, score_star_stage2 (Stage I, then "
        "STaR instead of REINFORCE).",
        ["base", "stage2_no_shaping", "stage2_shaping", "score"],
        decides=(),
    )
    compare_to: str = _help(
        "Row the others are compared with: difference of means with a 95% interval over seeds, paired by seed.",
        "score",
        decides=(),
    )


@dataclass
class SftConfig:
    lr: float = _help(
        "AdamW learning rate of the supervised rows (star, pair_sft, score_star_stage2).", 5e-6, decides=(SFT,)
    )
    steps: int = _help("Supervised steps per STaR round; pair_sft takes rounds x steps in one go.", 100, decides=(SFT,))
    batch_size: int = _help("Conversations per supervised step.", 64, decides=(SFT,))
    micro_batch_size: int = _help("Conversations per forward/backward pass.", 4, decides=(SFT,))
    rounds: int = _help("STaR rounds: sample from the current model, keep, fine-tune.", 2, decides=(SFT,))
    problems: int = _help(
        "Training problems sampled per STaR round (pair_sft: rounds x this many, once; 0: all).", 2000, decides=(SFT,)
    )
    samples: int = _help("Conversations (pair_sft: first attempts) sampled per problem.", 2, decides=(SFT,))
    train_first_attempt: bool = _help(
        "Also put the loss on attempt 1 (off: only the corrected attempt 2 is learned; pair_sft's attempt 1 is "
        "wrong by construction).",
        False,
        decides=(SFT,),
    )
    max_grad_norm: float = _help("Gradient clipping norm of the supervised steps (0: off).", 1.0, decides=(SFT,))
    dataset: str = _help(
        "What STaR and Pair-SFT learn (Kumar et al., 2024, Section 4): d (STaR: traces wrong at attempt 1, right at "
        "attempt 2; Pair-SFT: wrong attempts paired with right ones) or d_plus (also right -> right). The rows "
        "star/pair_sft use d and star_plus/pair_sft_plus d_plus whatever this says; score_star_stage2 uses it.",
        "d",
        decides=(SFT,),
    )
    star_restart: bool = _help(
        "STaR fine-tunes each round from the start model with a fresh optimizer, on that round's data sampled by "
        "the latest model (as STaR's paper does); false: each round continues from the last one's weights and "
        "optimizer.",
        True,
        decides=(SFT,),
    )


@dataclass
class PushConfig:
    repo: str = _help(
        "Hub model repository that --task push uploads to: owner/name (created if missing).", "", decides=()
    )
    folder: str = _help(
        "Model folder to upload, with its README.md model card (empty: <output_dir>/<run_name>/final).", "", decides=()
    )
    private: bool = _help("Create the repository private (an existing one keeps its visibility).", False, decides=())
    revision: str = _help("Branch to upload to, created from main if missing (empty: main).", "", decides=())
    commit_message: str = _help("Commit message (empty: 'Upload <folder> trained with SCoRe').", "", decides=())


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    grader: GraderConfig = field(default_factory=GraderConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    sft: SftConfig = field(default_factory=SftConfig)
    push: PushConfig = field(default_factory=PushConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=100))


CHOICES = {
    ("model", "dtype"): {"auto", "bfloat16", "float16", "float32"},
    ("model", "reference_dtype"): {"auto", "bfloat16"},
    ("data", "scheme"): {"paper", "full"},
    ("train", "kl_estimator"): {"k1", "k3"},
    ("train", "kl_mode"): {"loss", "reward"},
    ("train", "lr_schedule"): {"constant", "linear", "cosine"},
    ("train", "baseline"): {"loo", "batch", "none"},
    ("train", "loss_aggregation"): {"token_mean", "seq_mean"},
    ("train", "attempts"): {1, 2},
    ("train", "reward"): {"answer", "digit"},
    ("download", "builtin"): {"", "tiny", "testbed", "testbed-code"},
    ("grader", "extraction"): {"strict", "lenient"},
    ("rollout", "engine"): {"auto", "hf", "vllm"},
    ("model", "attn_implementation"): {"sdpa", "eager", "flash_attention_2", "flash_attention_3"},
    ("rollout", "hf_compile"): {"auto", "on", "off"},
    ("sft", "dataset"): {"d", "d_plus"},
}
POSITIVE = {
    ("rollout", "max_new_tokens"), ("rollout", "samples_per_prompt"), ("rollout", "generation_batch_size"),
    ("rollout", "top_p"), ("train", "rounds"), ("train", "batch_size"), ("train", "micro_batch_size"),
    ("train", "lr"), ("train", "max_nonfinite_steps"), ("train", "keep_checkpoints"), ("eval", "attempts"),
    ("eval", "max_new_tokens"), ("eval", "batch_size"), ("grader", "timeout"), ("eval", "samples"),
    ("eval", "sample_temperature"), ("sft", "lr"), ("sft", "steps"), ("sft", "batch_size"),
    ("sft", "micro_batch_size"), ("sft", "rounds"), ("sft", "samples"),
    ("rollout", "vllm_gpu_memory_utilization"), ("grader", "code_timeout"),
}  # fmt: skip
NON_NEGATIVE = {
    ("data", "max_problems"), ("rollout", "temperature"), ("train", "stage1_steps"), ("train", "stage2_steps"),
    ("train", "weight_decay"), ("train", "warmup_steps"), ("train", "max_grad_norm"), ("train", "alpha"),
    ("train", "beta1"), ("train", "beta2"), ("train", "save_every"), ("train", "sample_every"),
    ("eval", "temperature"), ("eval", "max_problems"), ("grader", "workers"), ("sft", "problems"),
    ("sft", "max_grad_norm"), ("train", "gamma"), ("train", "eval_every"), ("train", "eval_problems"),
    ("rollout", "vllm_max_model_len"), ("train", "time_limit"), ("train", "stop_margin"),
    ("train", "micro_batch_tokens"), ("model", "lora_rank"),
}  # fmt: skip
STR_TAG, NULL_TAG = "tag:yaml.org,2002:str", "tag:yaml.org,2002:null"
SEEDS = (("train", "seed"), ("data", "seed"), ("eval", "seed"))  # and experiment.seeds
SEED_LIMIT = 2**31  # numpy takes seeds below 2**32; the room above leaves seed + process index valid
FOLDER_NAMES = (("train", "run_name"), ("experiment", "name"), ("eval", "name"))  # eval.name may be empty


def _coerce(value, hint, where: str):
    """Check `value` against a field's type; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, list):
            raise ScoreError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, where) for v in value]
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported config type {hint}")
    if hint is bool:
        if not isinstance(value, bool):
            raise ScoreError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScoreError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ScoreError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ScoreError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint}")


def _from_yaml(node: yaml.Node, hint):
    """The value of a YAML node for a field of type `hint`. A string field takes a scalar as written: YAML 1.1
    would read the run name 12:30 as 750 and 007 as 7."""
    if hint is str and isinstance(node, yaml.ScalarNode) and node.tag != NULL_TAG:
        return node.value
    if typing.get_origin(hint) is list and isinstance(node, yaml.SequenceNode):
        (item,) = typing.get_args(hint)
        return [_from_yaml(n, item) for n in node.value]
    return yaml.SafeLoader("").construct_document(node)


def _mapping(node: yaml.Node, where: str, prefix: str = "") -> dict[str, yaml.Node]:
    """A YAML mapping as key -> value node. A key given twice is an error: YAML would keep the last silently."""
    lines: dict[str, int] = {}
    values: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        key, line = str(key_node.value), key_node.start_mark.line + 1
        if key in lines:
            raise ScoreError(f"{where}: duplicate key '{prefix}{key}' on lines {lines[key]} and {line}")
        lines[key], values[key] = line, value_node
    return values


def _set(cfg: Config, section: str, key: str, node: yaml.Node, origin: str) -> None:
    where = f"{section}.{key} ({origin})"
    sections = {f.name: f for f in dataclasses.fields(cfg)}
    if section not in sections:
        raise ScoreError(f"unknown config section '{section}' ({origin}); known: {', '.join(sections)}")
    part = getattr(cfg, section)
    hints = typing.get_type_hints(type(part))
    if key not in hints:
        raise ScoreError(f"unknown config key '{section}.{key}' ({origin}); known: {', '.join(hints)}")
    setattr(part, key, _coerce(_from_yaml(node, hints[key]), hints[key], where))


def is_folder_name(name: str) -> bool:
    """One path component that names a folder: not empty, not . or .., no separator (nothing escapes output_dir)."""
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def validate(cfg: Config, origin: str) -> None:
    """Reject values no run could use. `origin` names the file (and overrides) for the message."""
    for (section, key), allowed in CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ScoreError(f"{section}.{key} ({origin}): {value!r} is not one of {sorted(map(str, allowed))}")
    for section, key in POSITIVE:
        if not getattr(getattr(cfg, section), key) > 0:
            raise ScoreError(f"{section}.{key} ({origin}): must be positive")
    for section, key in NON_NEGATIVE:
        if getattr(getattr(cfg, section), key) < 0:
            raise ScoreError(f"{section}.{key} ({origin}): must not be negative")
    for section, key in SEEDS:
        if getattr(getattr(cfg, section), key) not in range(SEED_LIMIT):
            raise ScoreError(f"{section}.{key} ({origin}): a seed must be in [0, 2**31)")
    if any(seed not in range(SEED_LIMIT) for seed in cfg.experiment.seeds):
        raise ScoreError(f"experiment.seeds ({origin}): a seed must be in [0, 2**31)")
    for section, key in FOLDER_NAMES:
        name = getattr(getattr(cfg, section), key)
        if (name or section != "eval") and not is_folder_name(name):
            raise ScoreError(f"{section}.{key} ({origin}): {name!r} is not a folder name (one path component)")
    for name in cfg.train.report_to:
        if name not in TRACKERS:
            raise ScoreError(f"train.report_to ({origin}): unknown tracker {name!r}; known: {', '.join(TRACKERS)}")
    if cfg.train.gamma > 1:
        raise ScoreError(f"train.gamma ({origin}): a discount must be in [0, 1]")
    if cfg.model.lora_rank:
        check_lora(cfg.model, origin)
    if cfg.rollout.top_p > 1:
        raise ScoreError(f"rollout.top_p ({origin}): must be in (0, 1]")
    if cfg.rollout.vllm_gpu_memory_utilization > 1:
        raise ScoreError(f"rollout.vllm_gpu_memory_utilization ({origin}): must be in (0, 1]")
    if cfg.rollout.tis_cap not in (-1, 0) and not cfg.rollout.tis_cap >= 1:
        raise ScoreError(f"rollout.tis_cap ({origin}): must be -1 (by engine), 0 (off) or at least 1")
    for row in cfg.experiment.rows + [cfg.experiment.compare_to]:
        if row not in ROWS:
            raise ScoreError(f"experiment.rows/compare_to ({origin}): unknown row {row!r}; known: {', '.join(ROWS)}")
    if cfg.sft.batch_size % cfg.sft.micro_batch_size:
        raise ScoreError(
            f"sft.batch_size ({origin}): {cfg.sft.batch_size} is not divisible by "
            f"sft.micro_batch_size={cfg.sft.micro_batch_size}"
        )
    if not cfg.experiment.seeds:
        raise ScoreError(f"experiment.seeds ({origin}): give at least one seed")
    for level in cfg.data.levels:
        if level not in range(1, 6):
            raise ScoreError(f"data.levels ({origin}): {level} is not a MATH level 1-5")
    t = cfg.train
    if t.stage1_steps + t.stage2_steps == 0:
        raise ScoreError(f"train.stage1_steps/stage2_steps ({origin}): no training steps")
    if t.baseline == "loo" and cfg.rollout.samples_per_prompt < 2:
        raise ScoreError(
            f"rollout.samples_per_prompt ({origin}): the loo baseline needs at least 2 samples per problem"
        )
    conversations = t.batch_size * cfg.rollout.samples_per_prompt
    if conversations % t.micro_batch_size:
        raise ScoreError(
            f"train.batch_size ({origin}): {t.batch_size} problems x {cfg.rollout.samples_per_prompt} samples "
            f"= {conversations} conversations is not divisible by train.micro_batch_size={t.micro_batch_size}"
        )


def check_lora(model: ModelConfig, origin: str) -> None:
    if model.lora_alpha <= 0:
        raise ScoreError(f"model.lora_alpha ({origin}): must be positive")
    if not 0 <= model.lora_dropout < 1:
        raise ScoreError(f"model.lora_dropout ({origin}): must be in [0, 1)")
    if not model.lora_target_modules:
        raise ScoreError(f"model.lora_target_modules ({origin}): name at least one layer")
    if model.reference_dtype != "auto":
        raise ScoreError(
            f"model.reference_dtype ({origin}): with model.lora_rank the reference is the policy's own weights "
            "with its adapters off; leave it at auto"
        )


MAX_YAML_NODES = 10_000  # a config holds a few hundred values; YAML aliases can stand for billions (a "bomb")


def check_size(node: yaml.Node | None, where: str) -> None:
    """Refuse a YAML document whose values, with every alias written out, would number more than MAX_YAML_NODES,
    before any value is built (a few aliases of aliases expand to more than memory holds)."""
    budget, todo = MAX_YAML_NODES, [node] if node is not None else []
    while todo:
        budget -= 1
        if budget < 0:
            raise ScoreError(f"{where}: more than {MAX_YAML_NODES} values once its YAML aliases are expanded")
        current = todo.pop()
        if isinstance(current, yaml.SequenceNode):
            todo.extend(current.value)
        elif isinstance(current, yaml.MappingNode):
            todo.extend(part for pair in current.value for part in pair)


def parse_override(text: str) -> tuple[str, str, yaml.Node]:
    """'train.lr=1e-5' -> ('train', 'lr', the YAML node of 1e-5); the value is read as YAML (lists: [a,b])."""
    name, sep, raw = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ScoreError(f"--set {text!r}: expected section.key=value")
    try:
        node = yaml.compose(raw, Loader=yaml.SafeLoader) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ScoreError(f"--set {text!r}: cannot read value ({first_line(e)})") from None
    check_size(node, f"--set {name.strip()}")
    return section, key, node or yaml.ScalarNode(STR_TAG, "")


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then the YAML file, then `section.key=value` overrides; validated."""
    cfg = Config()
    origin = "defaults"
    if path is not None:
        path = Path(path)
        origin = str(path)
        if not path.is_file():
            raise ScoreError(f"config file not found: {path}")
        try:
            root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
        except UnicodeDecodeError as e:
            raise ScoreError(f"{path}: not UTF-8 text (byte {e.start} is {e.object[e.start]:#04x})") from None
        except yaml.YAMLError as e:
            raise ScoreError(f"{path}: not valid YAML ({first_line(e)})") from None
        check_size(root, str(path))
        if root is not None and not isinstance(root, yaml.MappingNode):
            raise ScoreError(f"{path}: expected a mapping of sections")
        for section, values in (_mapping(root, str(path)) if root else {}).items():
            if not isinstance(values, yaml.MappingNode):
                raise ScoreError(f"{section} ({path}): expected a mapping of keys")
            for key, node in _mapping(values, str(path), f"{section}.").items():
                _set(cfg, section, key, node, origin)
    for text in overrides:
        _set(cfg, *parse_override(text), f"--set {text}")
    validate(cfg, origin + (" with --set overrides" if overrides else ""))
    return cfg
