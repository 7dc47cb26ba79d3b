import json
import re
import unicodedata

import pytest
import sympy
import torch
from score import tiny
from score.grader import extract_answer
from sympy.parsing.sympy_parser import implicit_multiplication_application, parse_expr, standard_transformations
from transformers import AutoModelForCausalLM, AutoTokenizer

TEXTS = [
    "",
    "Problem:\nWhat is $\\frac{1}{2} + 3^{10}$?\n\n\\boxed{59049.5}",
    "  leading spaces, trailing tabs\t\t\r\n",
    "unicode: café, naïve, 日本語, emoji 🙂, e\u0301 (decomposed)",
    "special text <|im_end|> and <|im_start|> inside",
    "".join(chr(c) for c in range(1, 300)),
]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny.build_tokenizer()


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_round_trips(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == unicodedata.normalize("NFC", text)


def test_tokenizer_specials_and_size(tokenizer, sample_rows):
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") in tokenizer.all_special_ids
    assert 256 < len(tokenizer) <= 1000
    # Trained merges make the sample text clearly shorter than one token per byte.
    text = sample_rows[0]["solution"]
    assert len(tokenizer(text)["input_ids"]) < 0.6 * len(text.encode())


def test_tokenizer_is_deterministic(tokenizer):
    assert tiny.build_tokenizer().backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()
    other = tiny.build_tokenizer(corpus=["abc abc abd abd"] * 3)
    assert other.backend_tokenizer.to_str() != tokenizer.backend_tokenizer.to_str()


def test_chat_template_is_qwen_style(tokenizer):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
    )
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_saved_model_loads_with_auto_classes(tiny_model_dir, tokenizer):
    loaded = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for text in TEXTS:  # AutoTokenizer rebuilds a Qwen2Tokenizer: it must tokenise exactly like the built one
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.chat_template == tokenizer.chat_template
    assert model.config.model_type == "qwen2" and model.config.vocab_size == len(loaded)
    assert model.generation_config.eos_token_id == loaded.eos_token_id == loaded.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.pad_token_id == loaded.pad_token_id
    assert (tiny_model_dir / "model.safetensors").is_file()
    logits = model(torch.tensor([loaded("1 + 1 = 2")["input_ids"]])).logits
    assert logits.shape[-1] == len(loaded) and torch.isfinite(logits).all()


def test_build_tiny_model_is_seeded(tmp_path, tokenizer):
    state = torch.random.get_rng_state()
    weights = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        path = tiny.build_tiny_model(tmp_path / name, tokenizer, seed=seed, hidden_size=32, num_layers=1)
        weights[name] = AutoModelForCausalLM.from_pretrained(path).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is untouched
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert not torch.equal(weights["a"]["model.embed_tokens.weight"], weights["c"]["model.embed_tokens.weight"])
    assert weights["a"]["model.embed_tokens.weight"].shape == (len(tokenizer), 32)


def test_sample_problems_cover_math(sample_rows):
    assert 30 <= len(sample_rows) <= 40
    ids = [row["unique_id"] for row in sample_rows]
    assert len(set(ids)) == len(ids)
    assert {row["subject"] for row in sample_rows} == set(tiny.MATH_SUBJECTS)
    assert {row["level"] for row in sample_rows} == {1, 2, 3, 4, 5}
    assert {i.split("/")[0] for i in ids} == {"train", "test"}
    for row in sample_rows:
        assert re.fullmatch(r"(train|test)/[a-z_]+/\d+\.json", row["unique_id"])
        assert row["unique_id"].split("/")[1] == tiny.subject_key(row["subject"])
        assert extract_answer(row["solution"]) == row["answer"]


def _value(answer: str):
    """Read a sample answer (LaTeX) as a sympy value."""
    text = answer.replace("\\left", "").replace("\\right", "")
    text = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", text)
    text = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", text).replace("\\pi", "pi")
    return parse_expr(text, transformations=standard_transformations + (implicit_multiplication_application,))


def test_sample_answers_are_correct(sample_rows):
    # Each answer recomputed independently of the written solution.
    x = sympy.Symbol("x", real=True)
    a, b = sympy.roots(x**2 - 5 * x + 3, x)
    lw = sympy.solve(x**2 - 15 * x + 56, x)
    interval = sympy.solve_univariate_inequality(x**2 - 5 * x + 6 < 0, x, relational=False)
    s = sympy.Rational(21)
    expected = {
        "test/algebra/1.json": sympy.solve(3 * x + 7 - 22, x)[0],
        "train/algebra/2.json": sum(sympy.solve(x**2 - 9 * x + 14, x)),
        "test/algebra/3.json": (lambda f: f(f(1)))(lambda t: 2 * t**2 - 3),
        "train/algebra/4.json": sympy.Rational(4 - 2, 5 - 1),
        "train/algebra/5.json": sympy.solve(sympy.Matrix([[2, 3], [4, x]]).det(), x)[0],
        "test/algebra/6.json": sum(sympy.solve(sympy.Abs(2 * x - 5) - 11, x)),
        "test/counting_and_probability/1.json": sympy.factorial(5),
        "train/counting_and_probability/2.json": sympy.Rational(
            sum(i + j == 7 for i in range(1, 7) for j in range(1, 7)), 36
        ),
        "test/counting_and_probability/3.json": sympy.binomial(6, 2),
        "train/counting_and_probability/4.json": sympy.binomial(9, 3) - sympy.binomial(5, 3),
        "test/counting_and_probability/5.json": sum(n % 3 == 0 or n % 5 == 0 for n in range(1, 100)),
        "test/geometry/1.json": sympy.sqrt(6**2 + 8**2),
        "train/geometry/2.json": sympy.pi * 5**2,
        "test/geometry/3.json": 360 / (180 - 140),
        "train/geometry/4.json": sympy.sqrt(lw[0] ** 2 + lw[1] ** 2),
        "train/geometry/5.json": sympy.sqrt(s * (s - 13) * (s - 14) * (s - 15)),
        "test/intermediate_algebra/1.json": (x**3 - 2 * x + 5).subs(x, 2),
        "train/intermediate_algebra/2.json": sympy.simplify(a**2 + b**2),
        "train/intermediate_algebra/3.json": sympy.solve(sympy.log(x + 3, 2) - 5, x)[0],
        "test/intermediate_algebra/4.json": sympy.Tuple(interval.start, interval.end),
        "test/intermediate_algebra/5.json": sympy.summation(sympy.Rational(1, 3) ** x, (x, 0, sympy.oo)),
        "test/intermediate_algebra/6.json": sympy.minimum(x**2 + 16 / x**2, x, sympy.Interval.open(0, sympy.oo)),
        "test/number_theory/1.json": sympy.gcd(84, 126),
        "train/number_theory/2.json": pow(2, 10, 7),
        "test/number_theory/3.json": sympy.divisor_count(72),
        "train/number_theory/4.json": pow(7, 2024, 10),
        "test/number_theory/5.json": next(n for n in range(1, 100) if n % 5 == 3 and n % 7 == 4),
        "test/number_theory/6.json": sympy.divisor_sigma(360),
        "train/prealgebra/1.json": sympy.Rational(2, 3) + sympy.Rational(1, 4),
        "test/prealgebra/2.json": 40 * sympy.Rational(75, 100),
        "train/prealgebra/3.json": sympy.Rational(4 + 8 + 15 + 16 + 23, 5),
        "test/prealgebra/4.json": sympy.Rational(314, 100),
        "test/precalculus/1.json": sympy.sin(sympy.pi / 6) + sympy.cos(sympy.pi / 3),
        "train/precalculus/2.json": sympy.Matrix([[3, 1], [4, 2]]).det(),
        "test/precalculus/3.json": sympy.Tuple(sympy.sqrt(0**2 + 3**2), sympy.atan2(3, 0)),
        "train/precalculus/4.json": sympy.Matrix([1, -2, 3]).dot(sympy.Matrix([4, 0, -1])),
    }
    assert set(expected) == {row["unique_id"] for row in sample_rows}
    for row in sample_rows:
        got, want = _value(row["answer"]), sympy.sympify(expected[row["unique_id"]])
        if isinstance(want, sympy.Tuple):
            assert tuple(got) == tuple(want), row["unique_id"]
        else:
            assert sympy.simplify(sympy.nsimplify(got) - want) == 0, row["unique_id"]


def test_sample_files(sample_rows, sample_jsonl, sample_tar_root):
    lines = sample_jsonl.read_text().splitlines()
    assert [json.loads(line) for line in lines] == sample_rows
    files = sorted((sample_tar_root / "MATH").glob("*/*/*.json"))
    assert len(files) == len(sample_rows)
    by_id = {row["unique_id"]: row for row in sample_rows}
    for path in files:
        record = json.loads(path.read_text())
        row = by_id[path.relative_to(sample_tar_root / "MATH").as_posix()]
        assert record == {
            "problem": row["problem"],
            "level": f"Level {row['level']}",
            "type": row["subject"],
            "solution": row["solution"],
        }
