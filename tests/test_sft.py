import copy
import random

import pytest
import torch
from score import sft
from score.config import PromptConfig, RolloutConfig
from score.data import Problem
from score.prompts import conversation_pieces, end_of_turn_id
from score.rollout import generate_rollouts
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = PromptConfig(first_turn="Solve.", correction="Again.")


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def problems() -> list[Problem]:
    return [Problem(f"p{i}", f"What is {i} + {i}?", "", str(2 * i), "Algebra", 1) for i in range(3)]


def test_rollout_conversations_rebuild_the_rollout(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    torch.manual_seed(0)
    rollout = generate_rollouts(model, tokenizer, problems(), RolloutConfig(max_new_tokens=6), PROMPTS)
    conversations = sft.rollout_conversations(rollout, range(3))
    batch = sft.conversation_batch(conversations, tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    assert torch.equal(batch["input_ids"], rollout.input_ids[:, :width])
    assert torch.equal(batch["attention_mask"], rollout.attention_mask[:, :width])
    assert torch.equal(batch["labels"] != -100, rollout.attempt_mask[:, :width] > 0)
    second = sft.conversation_batch(conversations, tokenizer.pad_token_id, trained={2})
    assert torch.equal(second["labels"] != -100, rollout.attempt_mask[:, :width] == 2)
    assert torch.equal(second["labels"][second["labels"] != -100], rollout.input_ids[rollout.attempt_mask == 2])
    # Attempts given as ids are spliced into the same layout.
    stop = {end_of_turn_id(tokenizer, PROMPTS)}
    for r in range(3):
        pieces = conversation_pieces(tokenizer, problems()[r].problem, PROMPTS)
        attempts = [sft.attempt_ids(rollout, r, 1), sft.attempt_ids(rollout, r, 2)]
        assert sft.conversation_ids(pieces, attempts, stop) == conversations[r]


def test_loss_is_the_mean_over_trained_tokens_and_micro_batches_agree(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    conversations = [([5, 6, 7, 8, 9, 10], [0, 0, 1, 1, 0, 2]), ([11, 12, 13], [0, 2, 2])]
    batch = sft.conversation_batch(conversations, tokenizer.pad_token_id)
    # By hand: -log p of every labelled token given its prefix, averaged over the 5 labelled tokens.
    terms = []
    for ids, mask in conversations:
        logp = model(torch.tensor([ids])).logits[0].log_softmax(-1)
        terms += [-logp[t - 1, ids[t]] for t in range(1, len(ids)) if mask[t]]
    assert len(terms) == 5
    whole = copy.deepcopy(model)
    loss = sft.supervised_step(whole, torch.optim.SGD(whole.parameters(), lr=0.1), [batch], max_grad_norm=0)
    assert loss == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)
    # Two micro-batches of unequal token counts give the same step as one batch.
    split = copy.deepcopy(model)
    parts = [sft.conversation_batch(conversations[i : i + 1], tokenizer.pad_token_id) for i in (0, 1)]
    assert sft.supervised_step(split, torch.optim.SGD(split.parameters(), lr=0.1), parts, 0) == pytest.approx(loss)
    for a, b in zip(whole.parameters(), split.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(whole.parameters(), model.parameters(), strict=True))


def test_finetune_learns_the_trained_turn(tiny_model_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pieces = conversation_pieces(tokenizer, "What is 1 + 1?", PROMPTS)
    stop = end_of_turn_id(tokenizer, PROMPTS)
    wrong = tokenizer("3", add_special_tokens=False)["input_ids"] + [stop]
    right = tokenizer("\\boxed{2}", add_special_tokens=False)["input_ids"] + [stop]
    conversation = sft.conversation_ids(pieces, [wrong, right], {stop})
    logged = []
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = sft.finetune(
        model, [conversation] * 3, tokenizer.pad_token_id, optimizer, steps=30, batch_size=2, micro_batch_size=1,
        rng=random.Random(0), trained={2}, log=lambda step, loss: logged.append(step),
    )  # fmt: skip
    assert logged == list(range(1, 31)) and losses[-1] < 0.2 * losses[0]
    # Attempt 2 was learned: after the wrong attempt and the correction turn, greedy decoding writes the right one.
    ids = torch.tensor([conversation[0][: len(pieces.prompt) + len(wrong) + len(pieces.between[0]) - 1]])
    out = model.generate(ids, max_new_tokens=len(right), do_sample=False)[0, ids.shape[1] :].tolist()
    assert out == right
