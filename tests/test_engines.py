import pytest
import torch
from score import engines
from score.config import Config, RolloutConfig, ScoreError
from score.engines import Sampling, open_engine, resolve_engine_name, resolve_tis_cap
from score.engines.hf import HFEngine
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
