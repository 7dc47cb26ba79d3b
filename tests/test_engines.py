import pytest
import torch
from score import engines
from score.config import Config, RolloutConfig, ScoreError, load_config
from score.engines import Sampling, hf, open_engine, resolve_engine_name, resolve_tis_cap
from score.engines.hf import HFEngine, bucket, resolve_hf_compile
from transformers import AutoModelForCausalLM


def test_auto_picks_vllm_only_with_vllm_and_a_gpu(monkeypatch):
    for installed in (False, True):
        for gpu in (False, True):
            monkeypatch.setattr(engines, "vllm_available", lambda installed=installed: installed)
            monkeypatch.setattr(torch.cuda, "is_available", lambda gpu=gpu: gpu)
            assert resolve_engine_name("auto") == ("vllm" if installed and gpu else "hf")
            assert resolve_engine_name("hf") == "hf"


def test_vllm_without_vllm_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(engines, "vllm_available", lambda: False)
    with pytest.raises(ScoreError, match="vLLM is not installed"):
        resolve_engine_name("vllm")
    with pytest.raises(ScoreError, match="unknown engine"):
        resolve_engine_name("sglang")


def test_hf_engine_samples_the_model_and_restores_it(tiny_model_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()
    engine = open_engine(RolloutConfig(engine="hf"), tiny_model_dir, seed=0, dtype=torch.float32, model=model)
    assert isinstance(engine, HFEngine) and not engine.holds_weights
    eos = model.generation_config.eos_token_id
    prompts = [[5, 6, 7], [8]]
    out = engine.sample(prompts, Sampling(max_new_tokens=5, stop_ids=[eos], pad_id=0, greedy=True))
    assert out.logprobs is None and len(out.ids) == 2
    for prompt, ids in zip(prompts, out.ids, strict=True):
        assert 0 < len(ids) <= 5 and (len(ids) == 5 or ids[-1] == eos) and eos not in ids[:-1]
        with torch.no_grad():  # greedy: each sampled id is the argmax after the prompt and the ids before it
            logits = model.eval()(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1]
        assert logits.argmax(-1).tolist() == ids
    model.train()
    engine.sample(prompts, Sampling(max_new_tokens=2, stop_ids=[eos], pad_id=0))
    assert model.training


def test_tis_cap_defaults_to_2_with_the_vllm_engine_and_0_with_hf(monkeypatch):
    monkeypatch.setattr(engines, "vllm_available", lambda: True)
    assert Config().rollout.tis_cap == -1  # by engine
    for engine, gpu, cap in (("vllm", False, 2.0), ("hf", True, 0.0), ("auto", True, 2.0), ("auto", False, 0.0)):
        monkeypatch.setattr(torch.cuda, "is_available", lambda gpu=gpu: gpu)
        assert resolve_tis_cap(RolloutConfig(engine=engine)) == cap, (engine, gpu)
    for explicit in (0.0, 1.0, 3.5):  # an explicit value wins
        assert resolve_tis_cap(RolloutConfig(engine="vllm", tis_cap=explicit)) == explicit
    assert resolve_tis_cap(RolloutConfig(engine="hf", tis_cap=0.0)) == 0.0


def test_bucket_sizes_by_hand():
    assert [bucket(n) for n in range(1, 14)] == [1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 12, 12, 16]
    assert (bucket(64), bucket(65), bucket(97), bucket(1088), bucket(2600)) == (64, 96, 128, 1536, 3072)


def test_hf_compile_is_on_for_cuda_only_by_default():
    assert resolve_hf_compile("auto", torch.device("cuda")) and not resolve_hf_compile("auto", torch.device("cpu"))
    assert resolve_hf_compile("on", torch.device("cpu")) and not resolve_hf_compile("off", torch.device("cuda"))
    with pytest.raises(ScoreError, match="rollout.hf_compile"):
        resolve_hf_compile("maybe", torch.device("cpu"))
    with pytest.raises(ScoreError, match="hf_compile"):
        load_config(None, ["rollout.hf_compile=maybe"])


PROMPTS = [[5, 6, 7], [8], list(range(10, 80)), [9, 9, 9, 9, 9], [30, 31]]  # widths pad to 64 and to 128


def recorded_shapes(model, monkeypatch) -> list[tuple]:
    """(rows, prompt width, static cache length) of every generate call on `model`, appended as they happen."""
    shapes, generate = [], model.generate

    def recording(input_ids, **kwargs):
        shapes.append((*input_ids.shape, model.generation_config.max_cache_len))
        return generate(input_ids=input_ids, **kwargs)

    monkeypatch.setattr(model, "generate", recording)
    return shapes


def test_static_cache_path_samples_the_eager_tokens_in_bucketed_shapes(tiny_model_dir, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    eos = model.generation_config.eos_token_id
    greedy = Sampling(max_new_tokens=6, stop_ids=[eos], pad_id=0, greedy=True)
    eager = HFEngine(model).sample(PROMPTS, greedy).ids
    static = HFEngine(model, static_cache=True)
    shapes = recorded_shapes(model, monkeypatch)
    # 5 prompts run as 6 rows (the pad row dropped), 4 as 4: the same tokens whatever the padding
    assert static.sample(PROMPTS, greedy).ids == eager
    assert static.sample(PROMPTS[:4], greedy).ids == eager[:4]
    assert static.sample(PROMPTS[3:], greedy).ids == eager[3:]
    assert shapes == [(6, 128, 192), (4, 128, 192), (2, 64, 96)]
    # sampling: the same random stream draws the same tokens from the same distribution, as the eager path does
    # for the same rows (4 rows: no pad row; 5 rows: the pad row is the first prompt again, and draws its own)
    sampling = Sampling(max_new_tokens=6, stop_ids=[eos], pad_id=0, temperature=1.0, top_p=0.9)
    for prompts, rows in ((PROMPTS[:4], PROMPTS[:4]), (PROMPTS, [*PROMPTS, PROMPTS[0]])):
        torch.manual_seed(3)
        sampled = HFEngine(model).sample(rows, sampling).ids[: len(prompts)]
        torch.manual_seed(3)
        assert static.sample(prompts, sampling).ids == sampled
        assert sampled != eager[: len(prompts)]  # it sampled, not decoded greedily


def test_compiled_decode_step_compiles_once_per_bucket(tiny_model_dir, monkeypatch):
    # The compile path with torch.compile's eager backend: graph capture and its shape guards (what decides a
    # recompilation) are inductor's; inductor's code generation takes about 50 s on this CPU, too long for CI.
    graphs = []

    def counting(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    monkeypatch.setattr(hf, "COMPILE_BACKEND", counting)
    torch._dynamo.reset()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    eos = model.generation_config.eos_token_id
    greedy = Sampling(max_new_tokens=4, stop_ids=[eos], pad_id=0, greedy=True)
    eager = HFEngine(model).sample(PROMPTS, greedy).ids
    compiled = HFEngine(model, compile=True)
    assert compiled.sample(PROMPTS, greedy).ids == eager
    compiled_once = len(graphs)
    assert compiled_once > 0
    assert compiled.sample(PROMPTS[:4], greedy).ids == eager[:4]  # 4 rows: a new batch bucket
    compiled_twice = len(graphs)
    assert compiled_twice > compiled_once
    for prompts in (PROMPTS[1:], [PROMPTS[0]] * 6, PROMPTS[::-1]):  # bucket 4 or 6, the same cache: no compilation
        compiled.sample(prompts, greedy)
    assert len(graphs) == compiled_twice
    torch._dynamo.reset()


def test_hf_engine_samples_a_compute_dtype_copy_that_load_weights_refreshes(tiny_model_dir, tmp_path):
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)  # fp32 master weights
    engine = open_engine(RolloutConfig(engine="hf"), tiny_model_dir, seed=0, dtype=torch.bfloat16, model=policy)
    assert engine.holds_weights and engine.model is not policy and engine.model.dtype == torch.bfloat16
    assert policy.dtype == torch.float32
    with torch.no_grad():  # an optimizer step, as it were
        for param in policy.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    engine.load_weights(policy.state_dict())
    for name, param in engine.model.state_dict().items():
        assert torch.equal(param, policy.state_dict()[name].to(torch.bfloat16)), name
    eos = policy.generation_config.eos_token_id
    greedy = Sampling(max_new_tokens=5, stop_ids=[eos], pad_id=0, greedy=True)
    policy.save_pretrained(tmp_path)  # the updated policy loaded in bf16 samples what the refreshed copy samples
    updated = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert engine.sample(PROMPTS, greedy).ids == HFEngine(updated).sample(PROMPTS, greedy).ids
    same_dtype = open_engine(RolloutConfig(engine="hf"), tiny_model_dir, seed=0, dtype=torch.float32, model=policy)
    assert same_dtype.model is policy and not same_dtype.holds_weights
