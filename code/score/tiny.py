"""A tiny local model kit: tokenizer, random Qwen2 model and sample MATH-style problems.

One implementation serves the tests, `--task download` with `download.builtin=tiny` and CPU runs: nothing here
touches the network. The problems are written by this project (not taken from any dataset); their answers are
checked by the tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from score.config import CORRECTION_PROMPT, FIRST_TURN_PROMPT
from score.data import MATH_SUBJECTS, subject_key

IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"

# Qwen2-style ChatML template: a default system turn, <|im_start|>role\n...<|im_end|>\n per message.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Attention heads of 32 dimensions (hidden 64 / 2 heads), the smallest vLLM's CPU attention kernels take: the shape
# of the model `--task download` builds for configs/tiny.yaml and of the vLLM engine's tests.
VLLM_HEADS = {"num_heads": 2, "num_kv_heads": 1}

FOLDER_SUBJECTS = {subject_key(subject): subject for subject in MATH_SUBJECTS}

# (unique_id, level, problem, worked solution ending in \boxed{answer}, answer). Written for this project.
_PROBLEMS = [
    ("test/algebra/1.json", 1, r"What is the value of $x$ if $3x + 7 = 22$?",
     r"Subtracting 7 gives $3x = 15$, so $x = \boxed{5}$.", "5"),
    ("train/algebra/2.json", 2, r"Find the sum of the roots of $x^2 - 9x + 14 = 0$.",
     r"The quadratic factors as $(x - 2)(x - 7) = 0$, so the roots are 2 and 7 and their sum is $\boxed{9}$.", "9"),
    ("test/algebra/3.json", 3, r"If $f(x) = 2x^2 - 3$, what is $f(f(1))$?",
     r"First $f(1) = 2 - 3 = -1$. Then $f(-1) = 2 - 3 = -1$, so $f(f(1)) = \boxed{-1}$.", "-1"),
    ("train/algebra/4.json", 2,
     r"What is the slope of the line through $(1, 2)$ and $(5, 4)$? Express your answer as a common fraction.",
     r"The slope is $\frac{4 - 2}{5 - 1} = \frac{2}{4} = \boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
    ("train/algebra/5.json", 4,
     r"For what value of $k$ does the system $2x + 3y = 5$, $4x + ky = 7$ have no solution?",
     r"The lines are parallel when $\frac{4}{2} = \frac{k}{3}$, that is $k = 6$. Then the first equation doubled "
     r"reads $4x + 6y = 10 \ne 7$, so there is no solution for $k = \boxed{6}$.", "6"),
    ("test/algebra/6.json", 3, r"What is the sum of all values of $x$ that satisfy $|2x - 5| = 11$?",
     r"Either $2x - 5 = 11$, giving $x = 8$, or $2x - 5 = -11$, giving $x = -3$. The sum is $8 + (-3) = \boxed{5}$.",
     "5"),
    ("test/counting_and_probability/1.json", 1, r"In how many ways can 5 different books be arranged in a row?",
     r"There are $5! = 5 \cdot 4 \cdot 3 \cdot 2 \cdot 1 = \boxed{120}$ orders.", "120"),
    ("train/counting_and_probability/2.json", 2,
     r"Two fair six-sided dice are rolled. What is the probability that the sum is 7? Express your answer as a "
     r"common fraction.",
     r"Of the 36 equally likely outcomes, 6 have sum 7: $(1,6), (2,5), \dots, (6,1)$. The probability is "
     r"$\frac{6}{36} = \boxed{\frac{1}{6}}$.", r"\frac{1}{6}"),
    ("test/counting_and_probability/3.json", 2,
     r"How many subsets of $\{1, 2, 3, 4, 5, 6\}$ have exactly two elements?",
     r"Choosing 2 of the 6 elements can be done in $\binom{6}{2} = \boxed{15}$ ways.", "15"),
    ("train/counting_and_probability/4.json", 3,
     r"A committee of 3 people is chosen from 4 women and 5 men. In how many ways can the committee include at "
     r"least one woman?",
     r"There are $\binom{9}{3} = 84$ committees in all and $\binom{5}{3} = 10$ with men only, so "
     r"$84 - 10 = \boxed{74}$ include a woman.", "74"),
    ("test/counting_and_probability/5.json", 4, r"How many positive integers less than 100 are multiples of 3 or 5?",
     r"Below 100 there are 33 multiples of 3, 19 multiples of 5 and 6 multiples of 15. By inclusion-exclusion "
     r"the count is $33 + 19 - 6 = \boxed{46}$.", "46"),
    ("test/geometry/1.json", 1, r"A right triangle has legs of length 6 and 8. How long is its hypotenuse?",
     r"By the Pythagorean theorem the hypotenuse is $\sqrt{6^2 + 8^2} = \sqrt{100} = \boxed{10}$.", "10"),
    ("train/geometry/2.json", 2,
     r"What is the area of a circle with diameter 10? Express your answer in terms of $\pi$.",
     r"The radius is 5, so the area is $\pi \cdot 5^2 = \boxed{25\pi}$.", r"25\pi"),
    ("test/geometry/3.json", 3,
     r"Each interior angle of a regular polygon measures $140^\circ$. How many sides does the polygon have?",
     r"Each exterior angle is $180^\circ - 140^\circ = 40^\circ$, and the exterior angles sum to $360^\circ$, "
     r"so there are $\frac{360}{40} = \boxed{9}$ sides.", "9"),
    ("train/geometry/4.json", 4, r"A rectangle has perimeter 30 and area 56. How long is its diagonal?",
     r"The sides satisfy $l + w = 15$ and $lw = 56$, so $l^2 + w^2 = 15^2 - 2 \cdot 56 = 113$ and the diagonal "
     r"is $\boxed{\sqrt{113}}$.", r"\sqrt{113}"),
    ("train/geometry/5.json", 5,
     r"Triangle $ABC$ has $AB = 13$, $BC = 14$ and $CA = 15$. What is the area of triangle $ABC$?",
     r"The semiperimeter is $s = 21$, so by Heron's formula the area is "
     r"$\sqrt{21 \cdot 8 \cdot 7 \cdot 6} = \sqrt{7056} = \boxed{84}$.", "84"),
    ("test/intermediate_algebra/1.json", 2, r"Find the remainder when $x^3 - 2x + 5$ is divided by $x - 2$.",
     r"By the remainder theorem the remainder is $2^3 - 2 \cdot 2 + 5 = \boxed{9}$.", "9"),
    ("train/intermediate_algebra/2.json", 3, r"Let $a$ and $b$ be the roots of $x^2 - 5x + 3 = 0$. Find $a^2 + b^2$.",
     r"By Vieta, $a + b = 5$ and $ab = 3$, so $a^2 + b^2 = (a + b)^2 - 2ab = 25 - 6 = \boxed{19}$.", "19"),
    ("train/intermediate_algebra/3.json", 2, r"Solve for $x$: $\log_2 (x + 3) = 5$.",
     r"Then $x + 3 = 2^5 = 32$, so $x = \boxed{29}$.", "29"),
    ("test/intermediate_algebra/4.json", 3,
     r"Find all real $x$ with $x^2 - 5x + 6 < 0$. Express your answer in interval notation.",
     r"Since $x^2 - 5x + 6 = (x - 2)(x - 3)$ is negative exactly between its roots, the solution is "
     r"$\boxed{(2,3)}$.", "(2,3)"),
    ("test/intermediate_algebra/5.json", 3,
     r"Find the sum of the infinite geometric series $1 + \frac{1}{3} + \frac{1}{9} + \cdots$.",
     r"The ratio is $\frac{1}{3}$, so the sum is $\frac{1}{1 - \frac{1}{3}} = \boxed{\frac{3}{2}}$.", r"\frac{3}{2}"),
    ("test/intermediate_algebra/6.json", 5,
     r"Find the minimum value of $x^2 + \frac{16}{x^2}$ over all nonzero real $x$.",
     r"By AM-GM, $x^2 + \frac{16}{x^2} \ge 2\sqrt{16} = 8$, with equality when $x^2 = 4$. The minimum is "
     r"$\boxed{8}$.", "8"),
    ("test/number_theory/1.json", 1, r"What is the greatest common divisor of 84 and 126?",
     r"Since $84 = 2^2 \cdot 3 \cdot 7$ and $126 = 2 \cdot 3^2 \cdot 7$, the gcd is $2 \cdot 3 \cdot 7 = \boxed{42}$.",
     "42"),
    ("train/number_theory/2.json", 2, r"What is the remainder when $2^{10}$ is divided by 7?",
     r"Since $2^3 = 8 \equiv 1 \pmod 7$, we get $2^{10} = (2^3)^3 \cdot 2 \equiv 2 \pmod 7$. The remainder is "
     r"$\boxed{2}$.", "2"),
    ("test/number_theory/3.json", 3, r"How many positive divisors does 72 have?",
     r"Since $72 = 2^3 \cdot 3^2$, it has $(3 + 1)(2 + 1) = \boxed{12}$ divisors.", "12"),
    ("train/number_theory/4.json", 3, r"What is the units digit of $7^{2024}$?",
     r"The units digits of powers of 7 repeat with period 4: 7, 9, 3, 1. As $2024$ is a multiple of 4, the units "
     r"digit is $\boxed{1}$.", "1"),
    ("test/number_theory/5.json", 4,
     r"Find the smallest positive integer $n$ with $n \equiv 3 \pmod 5$ and $n \equiv 4 \pmod 7$.",
     r"The numbers $3, 8, 13, 18, \dots$ are $3 \bmod 5$; among them 18 is the first with $18 = 2 \cdot 7 + 4$. "
     r"So $n = \boxed{18}$.", "18"),
    ("test/number_theory/6.json", 5, r"What is the sum of all positive divisors of 360?",
     r"Since $360 = 2^3 \cdot 3^2 \cdot 5$, the divisor sum is "
     r"$(1 + 2 + 4 + 8)(1 + 3 + 9)(1 + 5) = 15 \cdot 13 \cdot 6 = \boxed{1170}$.", "1170"),
    ("train/prealgebra/1.json", 1, r"What is $\frac{2}{3} + \frac{1}{4}$? Express your answer as a common fraction.",
     r"With denominator 12, $\frac{8}{12} + \frac{3}{12} = \boxed{\frac{11}{12}}$.", r"\frac{11}{12}"),
    ("test/prealgebra/2.json", 1,
     r"A shirt costs $\$40$ and is on sale for $25\%$ off. What is the sale price, in dollars?",
     r"The discount is $0.25 \cdot 40 = 10$ dollars, so the sale price is $40 - 10 = \boxed{30}$.", "30"),
    ("train/prealgebra/3.json", 2,
     r"What is the mean of the numbers 4, 8, 15, 16 and 23? Express your answer as a decimal.",
     r"The sum is $4 + 8 + 15 + 16 + 23 = 66$, so the mean is $\frac{66}{5} = \boxed{13.2}$.", "13.2"),
    ("test/prealgebra/4.json", 1, r"Round $3.14159$ to the nearest hundredth.",
     r"The thousandths digit is 1, which is less than 5, so we round down to $\boxed{3.14}$.", "3.14"),
    ("test/precalculus/1.json", 1, r"Compute $\sin 30^\circ + \cos 60^\circ$.",
     r"Both values equal $\frac{1}{2}$, so the sum is $\boxed{1}$.", "1"),
    ("train/precalculus/2.json", 2, r"Find the determinant of $\begin{pmatrix} 3 & 1 \\ 4 & 2 \end{pmatrix}$.",
     r"The determinant is $3 \cdot 2 - 1 \cdot 4 = \boxed{2}$.", "2"),
    ("test/precalculus/3.json", 3,
     r"Convert the point $(0, 3)$ in rectangular coordinates to polar coordinates $(r, \theta)$ with $r > 0$ and "
     r"$0 \le \theta < 2\pi$.",
     r"Here $r = \sqrt{0^2 + 3^2} = 3$, and the point lies on the positive $y$-axis, so $\theta = \frac{\pi}{2}$. "
     r"The answer is $\boxed{\left( 3, \frac{\pi}{2} \right)}$.", r"\left( 3, \frac{\pi}{2} \right)"),
    ("train/precalculus/4.json", 2,
     r"Find the dot product of $\begin{pmatrix} 1 \\ -2 \\ 3 \end{pmatrix}$ and "
     r"$\begin{pmatrix} 4 \\ 0 \\ -1 \end{pmatrix}$.",
     r"The dot product is $1 \cdot 4 + (-2) \cdot 0 + 3 \cdot (-1) = \boxed{1}$.", "1"),
]  # fmt: skip


def sample_problems() -> list[dict]:
    """About 30 MATH-500-style rows: problem, solution, answer, subject, level (int), unique_id."""
    rows = []
    for unique_id, level, problem, solution, answer in _PROBLEMS:
        folder = unique_id.split("/")[1]
        rows.append(
            {
                "problem": problem,
                "solution": solution,
                "answer": answer,
                "subject": FOLDER_SUBJECTS[folder],
                "level": level,
                "unique_id": unique_id,
            }
        )
    return rows


def write_sample_jsonl(path: str | Path, rows: list[dict] | None = None) -> Path:
    """MATH-500-style JSONL (one row per line, with `answer` and `unique_id`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = sample_problems() if rows is None else rows
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_sample_tar_layout(root: str | Path, rows: list[dict] | None = None) -> Path:
    """The original MATH.tar layout `<root>/MATH/{train,test}/<subject>/<n>.json`; returns `<root>/MATH`.

    Files hold the original fields only (problem, level "Level k", type, solution): the answer lives in the
    solution's last \\boxed{}.
    """
    math_dir = Path(root) / "MATH"
    rows = sample_problems() if rows is None else rows
    for row in rows:
        path = math_dir / row["unique_id"]
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "problem": row["problem"],
            "level": f"Level {row['level']}",
            "type": row["subject"],
            "solution": row["solution"],
        }
        path.write_text(json.dumps(record, indent=4))
    return math_dir


def default_corpus() -> list[str]:
    """Text the default tokenizer learns its merges from: the sample problems and the paper's prompts."""
    texts = [FIRST_TURN_PROMPT, CORRECTION_PROMPT, "Final Answer: The final answer is $5$. I hope it is correct."]
    for row in sample_problems():
        texts += [row["problem"], row["solution"]]
    return texts


def build_tokenizer(corpus: list[str] | None = None, vocab_size: int = 1000) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer built locally, with a Qwen-style chat template.

    It has Qwen2's pipeline (NFC, Qwen2's split regex, byte level), so AutoTokenizer, which loads any `qwen2`
    model's tokenizer as Qwen2Tokenizer, rebuilds exactly this tokenizer; every (NFC) text round-trips. Merges are
    trained on `corpus` (default: `default_corpus()`) up to `vocab_size` entries, deterministically. Special
    tokens: <|endoftext|> (pad), <|im_start|>, <|im_end|> (eos, end of turn).
    """
    corpus = default_corpus() if corpus is None else corpus
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[ENDOFTEXT, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START],
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )


def build_tiny_model(
    out_dir: str | Path,
    tokenizer: PreTrainedTokenizerFast | None = None,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 4096,
    tie_word_embeddings: bool = True,
) -> Path:
    """Save a randomly initialised Qwen2ForCausalLM sized to the tokenizer, with the tokenizer, into `out_dir`.

    The folder loads with AutoModelForCausalLM / AutoTokenizer.from_pretrained; the same seed gives the same
    weights.
    """
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer() if tokenizer is None else tokenizer
    eos, pad = tokenizer.convert_tokens_to_ids([IM_END, ENDOFTEXT])
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=None,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's random state
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
