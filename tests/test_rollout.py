import io
import sys
import time

import pytest
import torch
from score import progress as progress_module
from score.config import PromptConfig, RolloutConfig
from score.data import Problem
from score.engines import Engine, Samples, Sampling
from score.prompts import conversation_pieces
from score.rollout import generate_rollouts
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = PromptConfig(first_turn="Solve it.", correction="Check and fix.")
CFG = RolloutConfig(max_new_tokens=6, temperature=1.0, top_p=1.0, generation_batch_size=8)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def problems(sample_rows):
    return [
        Problem(r["unique_id"], r["problem"], r["solution"], r["answer"], r["subject"], r["level"])
        for r in sample_rows[:3]
    ]


class Script:
    """Forces the model's choices: calls[c][row] lists the tokens of the c-th generate call, step by step.

    Forcing makes the forced token the only one with probability > 0, so sampling and greedy both pick it.
    Also records the unpadded inputs of every generate call.
    """

    def __init__(self, model, calls: list[list[list[int]]]):
        self.model, self.calls, self.call, self.step, self.inputs = model, calls, -1, 0, []

    def __enter__(self):
        original = self.model.generate

        def generate(input_ids, attention_mask, **kwargs):
            self.call, self.step = self.call + 1, 0
            self.inputs.append([ids[m.bool()].tolist() for ids, m in zip(input_ids, attention_mask, strict=True)])
            return original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

        self.model.generate = generate
        self.handle = self.model.lm_head.register_forward_hook(self.force)
        return self

    def force(self, module, args, logits):
        plan = self.calls[self.call] if self.call < len(self.calls) else []
        for row, tokens in enumerate(plan):
            if self.step < len(tokens):
                logits[row, -1] = float("-inf")
                logits[row, -1, tokens[self.step]] = 0.0
        self.step += 1
        return logits

    def __exit__(self, *exc):
        self.handle.remove()
        del self.model.generate


def token(tokenizer, text: str) -> int:
    (i,) = tokenizer(text, add_special_tokens=False)["input_ids"]
    return i


def test_shapes_masks_and_contiguous_samples(model, tokenizer, problems):
    torch.manual_seed(0)
    out = generate_rollouts(model, tokenizer, problems, CFG, PROMPTS, samples_per_prompt=2, batch_size=4)
    n = len(problems) * 2
    assert out.problem_index.tolist() == [0, 0, 1, 1, 2, 2]
    assert out.input_ids.shape == out.attention_mask.shape == out.attempt_mask.shape
    assert out.rewards.shape == out.truncated.shape == out.lengths.shape == (n, 2)
    assert len(out.texts) == n and all(len(t) == 2 for t in out.texts)
    lengths = out.attention_mask.sum(1)
    for r in range(n):
        # right padded: the conversation is a prefix, padding is the pad id and belongs to no attempt
        assert out.attention_mask[r, : lengths[r]].all() and not out.attention_mask[r, lengths[r] :].any()
        assert (out.input_ids[r, lengths[r] :] == tokenizer.pad_token_id).all()
        prompt = conversation_pieces(tokenizer, problems[out.problem_index[r]].problem, PROMPTS).prompt
        assert out.input_ids[r, : len(prompt)].tolist() == prompt
        for k in (1, 2):
            where = (out.attempt_mask[r] == k).nonzero().flatten()
            assert len(where) == out.lengths[r, k - 1] > 0
            assert where.tolist() == list(range(int(where[0]), int(where[-1]) + 1))  # one contiguous span
    assert (out.attempt_mask[out.attention_mask == 0] == 0).all()
    assert (out.lengths <= CFG.max_new_tokens).all()


def test_forward_pass_reproduces_greedy_choices(model, tokenizer, problems):
    # Every attempt token must be the argmax of the training forward pass over the final conversation:
    # the spliced context is exactly what generation saw, left padding and all.
    out = generate_rollouts(model, tokenizer, problems, CFG, PROMPTS, greedy=True, batch_size=2)
    with torch.no_grad():
        logp = model(input_ids=out.input_ids, attention_mask=out.attention_mask).logits.log_softmax(-1)
    chosen = logp[:, :-1].gather(-1, out.input_ids[:, 1:, None]).squeeze(-1)
    best = logp[:, :-1].max(-1).values
    sampled = out.attempt_mask[:, 1:] > 0
    assert sampled.sum() == out.lengths.sum()
    assert torch.allclose(chosen[sampled], best[sampled], atol=1e-4)


def test_turn_two_contains_the_sampled_ids(model, tokenizer, problems):
    im_end = token(tokenizer, "<|im_end|>")
    # "t", "he" is not how the tokenizer writes "the": re-tokenising the text would change the ids.
    forced = [token(tokenizer, "t"), token(tokenizer, "he"), im_end]
    assert tokenizer(tokenizer.decode(forced[:2]))["input_ids"] != forced[:2]
    with Script(model, [[forced]]) as script:
        out = generate_rollouts(model, tokenizer, problems[:1], CFG, PROMPTS)
    pieces = conversation_pieces(tokenizer, problems[0].problem, PROMPTS)
    assert script.inputs[0] == [pieces.prompt]
    assert script.inputs[1] == [pieces.prompt + forced + pieces.between[0][1:]]  # one <|im_end|>, the sampled one
    row = out.input_ids[0, : out.attention_mask[0].sum()].tolist()
    assert row[: len(script.inputs[1][0])] == script.inputs[1][0]
    assert out.input_ids[0][out.attempt_mask[0] == 1].tolist() == forced
    assert out.texts[0][0] == "the" and out.lengths[0, 0] == 3 and not out.truncated[0, 0]


def test_stop_and_truncation(model, tokenizer, problems):
    im_end, x = token(tokenizer, "<|im_end|>"), token(tokenizer, "x")
    n = CFG.max_new_tokens
    # row 0 stops after 2 tokens; row 1 never stops (truncated); row 2 stops on the last allowed token
    calls = [[[x, im_end], [x] * n, [x] * (n - 1) + [im_end]], [[im_end], [im_end], [im_end]]]
    with Script(model, calls):
        out = generate_rollouts(model, tokenizer, problems, CFG, PROMPTS)
    assert out.lengths.tolist() == [[2, 1], [n, 1], [n, 1]]
    assert out.truncated.tolist() == [[False, False], [True, False], [False, False]]
    assert [t[0] for t in out.texts] == ["x", "x" * n, "x" * (n - 1)]
    between = conversation_pieces(tokenizer, problems[1].problem, PROMPTS).between[0]
    for r, expected_tail in ((0, between[1:]), (1, between)):
        ids = out.input_ids[r].tolist()
        end = int((out.attempt_mask[r] == 1).nonzero()[-1]) + 1
        assert ids[end : end + len(expected_tail)] == expected_tail
        assert out.attempt_mask[r, end : end + len(expected_tail)].eq(0).all()
    # tokens generate appended after a row's stop (padding) are not part of the conversation
    assert (out.input_ids[0][out.attempt_mask[0] == 1] == torch.tensor([x, im_end])).all()


@pytest.mark.parametrize("pad", ["eos", "none"])
def test_pad_equal_to_eos(model, tokenizer, problems, pad):
    im_end, x, y = token(tokenizer, "<|im_end|>"), token(tokenizer, "x"), token(tokenizer, "y")
    tokenizer.pad_token = tokenizer.eos_token if pad == "eos" else None
    # Row 0 stops first; generate then pads it with <|im_end|>, which must read as padding, not content.
    calls = [[[x, im_end], [y, y, y, im_end]], [[im_end], [y, im_end]]]
    with Script(model, calls):
        out = generate_rollouts(model, tokenizer, problems[:2], CFG, PROMPTS)
    assert out.lengths.tolist() == [[2, 1], [4, 2]]
    assert not out.truncated.any()
    assert [t[0] for t in out.texts] == ["x", "yyy"]
    expected = [[x, im_end], [im_end]], [[y, y, y, im_end], [y, im_end]]
    for r, (y1, y2) in enumerate(expected):
        pieces = conversation_pieces(tokenizer, problems[r].problem, PROMPTS)
        conversation = pieces.prompt + y1 + pieces.between[0][1:] + y2
        assert out.input_ids[r, : out.attention_mask[r].sum()].tolist() == conversation
        assert (out.input_ids[r][out.attention_mask[r] == 0] == im_end).all()  # right padding with eos


def test_three_attempts(model, tokenizer, problems):
    im_end, a, b, c = (token(tokenizer, t) for t in ("<|im_end|>", "a", "b", "c"))
    with Script(model, [[[a, im_end]], [[b, b, im_end]], [[c]]]) as script:
        out = generate_rollouts(model, tokenizer, problems[:1], CFG, PROMPTS, attempts=3)
    pieces = conversation_pieces(tokenizer, problems[0].problem, PROMPTS, attempts=3)
    turn3 = pieces.prompt + [a, im_end] + pieces.between[0][1:] + [b, b, im_end] + pieces.between[1][1:]
    assert script.inputs[2] == [turn3]
    assert out.rewards.shape == (1, 3) and out.texts[0][:2] == ["a", "bb"]
    assert [int((out.attempt_mask == k).sum()) for k in (1, 2, 3)] == out.lengths[0].tolist()
    assert out.lengths[0, :2].tolist() == [2, 3]
    assert tokenizer.decode(out.input_ids[0][: len(turn3)]).count("Check and fix.") == 2


def test_single_attempt(model, tokenizer, problems):
    torch.manual_seed(0)
    out = generate_rollouts(model, tokenizer, problems, CFG, PROMPTS, attempts=1, samples_per_prompt=2)
    assert out.rewards.shape == out.lengths.shape == (6, 1)
    assert set(out.attempt_mask.unique().tolist()) == {0, 1}
    assert "Check and fix." not in tokenizer.decode(out.input_ids[0])


def test_greedy_is_deterministic_and_batch_independent(model, tokenizer, problems):
    runs = [
        generate_rollouts(model, tokenizer, problems, CFG, PROMPTS, greedy=True, samples_per_prompt=2, batch_size=b)
        for b in (6, 1)
    ]
    runs.append(generate_rollouts(model, tokenizer, problems, CFG, PROMPTS, temperature=0.0, samples_per_prompt=2))
    for other in runs[1:]:
        assert torch.equal(runs[0].input_ids, other.input_ids)
    assert torch.equal(runs[0].input_ids[0], runs[0].input_ids[1])  # both samples of a problem are the same


def test_sampling_ignores_the_model_generation_config(model, tokenizer, problems):
    # top_k=1 in the model's config would make every sample the greedy one; sampling must not use it.
    saved = model.generation_config
    saved.top_k, saved.repetition_penalty = 1, 1.5
    model.train()
    try:
        torch.manual_seed(0)
        out = generate_rollouts(model, tokenizer, problems[:1], CFG, PROMPTS, samples_per_prompt=4)
    finally:
        saved.top_k, saved.repetition_penalty = None, None
    assert model.training and model.generation_config is saved  # mode and config restored
    model.eval()
    firsts = {tuple(row[mask == 1].tolist()) for row, mask in zip(out.input_ids, out.attempt_mask, strict=True)}
    assert len(firsts) == 4


def test_rewards_from_reward_fn(model, tokenizer, problems):
    calls = []

    def reward_fn(texts, probs):
        calls.append((list(texts), [p.id for p in probs]))
        return [float(len(t)) for t in texts]

    torch.manual_seed(0)
    out = generate_rollouts(model, tokenizer, problems, CFG, PROMPTS, samples_per_prompt=2, reward_fn=reward_fn)
    ids = [problems[i].id for i in out.problem_index]
    assert [c[1] for c in calls] == [ids, ids]
    assert out.rewards.tolist() == [[float(len(t)) for t in row] for row in out.texts]
    assert [c[0] for c in calls] == [[row[k] for row in out.texts] for k in (0, 1)]


def test_default_rewards_check_answers(model, tokenizer, problems):
    im_end = token(tokenizer, "<|im_end|>")
    right = tokenizer(f"\\boxed{{{problems[0].answer}}}", add_special_tokens=False)["input_ids"]
    wrong = tokenizer("\\boxed{1000}", add_special_tokens=False)["input_ids"]
    with Script(model, [[right + [im_end]], [wrong + [im_end]]]):
        out = generate_rollouts(model, tokenizer, problems[:1], CFG, PROMPTS, max_new_tokens=12)
    assert out.rewards.tolist() == [[1.0, 0.0]]


def test_plain_template_fallback(model, tokenizer, problems):
    tokenizer.chat_template = None
    eos = tokenizer.eos_token_id
    with Script(model, [[[token(tokenizer, "a"), eos]], [[eos]]]):
        out = generate_rollouts(model, tokenizer, problems[:1], CFG, PROMPTS)
    text = tokenizer.decode(out.input_ids[0, : out.attention_mask[0].sum()])
    assert text.startswith("User: Solve it.\n\nProblem:\n")
    assert text.endswith("Assistant:\na<|im_end|>\n\nUser: Check and fix.\n\nAssistant:\n<|im_end|>")
    assert out.lengths.tolist() == [[2, 1]]


class SlowEngine(Engine):
    """Answers every prompt with one stop token after `seconds`: a long generation without a model."""

    def __init__(self, stop_id: int, seconds: float):
        self.stop_id, self.seconds = stop_id, seconds

    def sample(self, prompts: list[list[int]], sampling: Sampling) -> Samples:
        time.sleep(self.seconds)
        return Samples(ids=[[self.stop_id] for _ in prompts])


def test_a_long_generation_reports_progress_in_a_log_and_a_short_one_is_silent(tokenizer, problems, monkeypatch):
    monkeypatch.setattr(progress_module, "LOG_INTERVAL", 0.3)
    for seconds in (0.0, 0.2):  # 2 batches x 2 attempts: 0.8 s in all, or too fast to mention
        log = io.StringIO()  # not a terminal, like a Slurm job's output file
        monkeypatch.setattr(sys, "stderr", log)
        engine = SlowEngine(tokenizer.eos_token_id, seconds)
        generate_rollouts(
            engine, tokenizer, problems, CFG, PROMPTS, reward_fn=lambda t, p: [0.0] * len(t), batch_size=2
        )
        shown = log.getvalue().splitlines()
        assert all(line.startswith("generate:") and "/6 [" in line for line in shown), shown
        if seconds:
            assert len(shown) >= 2 and "6/6 [" in shown[-1], shown  # on its way, then its end
        else:
            assert shown == []
