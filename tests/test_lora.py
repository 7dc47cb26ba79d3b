"""LoRA policies (peft): adapters train, the base stays, the reference is the base with adapters off, merged weights
are exact, checkpoints resume exactly, and final/ holds what evaluation loads."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from score import tiny
from score import trainer as trainer_module
from score.config import RolloutConfig, ScoreError, load_config
from score.engines import Sampling, hf, open_engine
from score.engines.hf import HFEngine
from score.evaluate import evaluate
from score.models import (
    AdaptersOff,
    adapter_base,
    add_lora,
    load_model,
    lora_scaling,
    merge_lora,
    transformers_model,
    weight_dtypes,
)
from score.trainer import train
from test_engines import PROMPTS
from test_trainer import (  # noqa: F401 (fresh_accelerate_state: a fixture)
    DDP,
    FSDP,
    RL_BATCH,
    contains,
    crash_in_step,
    fresh_accelerate_state,
    mean,
    metrics,
    record_calls,
    run_cli,
    tiny_cli_overrides,
    tiny_config,
)
from transformers import AutoModelForCausalLM, AutoTokenizer

# An untied tiny model with an adapter on its output layer too: a random tiny model's logits are small, and adapters
# on the decoder layers alone cannot move them far enough for the reward to rise in a few CPU steps.
LORA = ["model.lora_rank=8", "model.lora_target_modules=[q_proj,v_proj,lm_head]"]


@pytest.fixture(scope="module")
def untied_model_dir(tmp_path_factory) -> Path:
    return tiny.build_tiny_model(tmp_path_factory.mktemp("untied") / "model", tie_word_embeddings=False)


def perturbed_lora(model_dir: Path, *overrides: str) -> torch.nn.Module:
    """The tiny model with adapters whose B is random (as after training), so the adapters change the outputs."""
    cfg = load_config(None, [f"model.name={model_dir}", *LORA, *overrides])
    policy = add_lora(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), cfg.model)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05, generator=torch.Generator().manual_seed(len(name)))
    return policy.eval()


def test_merge_lora_by_hand():
    w, bias = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([0.5, 0.5])
    a, b = torch.tensor([[1.0, -1.0]]), torch.tensor([[2.0], [0.0]])
    layer = "base_model.model.model.layers.0.self_attn.q_proj"
    state = {
        f"{layer}.base_layer.weight": w,
        f"{layer}.base_layer.bias": bias,
        f"{layer}.lora_A.default.weight": a,
        f"{layer}.lora_B.default.weight": b,
        "base_model.model.model.norm.weight": torch.ones(2),
    }
    merged = merge_lora(state, scaling=0.5)
    # W + 0.5 x B @ A: B @ A = [[2, -2], [0, 0]]
    assert merged.keys() == {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.bias",
                             "model.norm.weight"}  # fmt: skip
    assert torch.equal(merged["model.layers.0.self_attn.q_proj.weight"], torch.tensor([[2.0, 1.0], [3.0, 4.0]]))
    assert merged["model.layers.0.self_attn.q_proj.bias"] is bias  # untouched tensors are not copied
    assert torch.equal(state[f"{layer}.base_layer.weight"], torch.tensor([[1.0, 2.0], [3.0, 4.0]]))  # not mutated


def test_adapters_off_is_the_base_and_merged_weights_are_the_adapted_model(untied_model_dir):
    ids = torch.tensor([[5, 9, 14, 3, 7, 22]])
    base = AutoModelForCausalLM.from_pretrained(untied_model_dir, dtype=torch.float32).eval()
    policy = perturbed_lora(untied_model_dir)
    assert lora_scaling(policy) == 32.0 / 8
    with torch.no_grad():
        adapted = policy(input_ids=ids).logits
        assert torch.equal(AdaptersOff(policy)(input_ids=ids).logits, base(input_ids=ids).logits)
        assert not torch.allclose(adapted, base(input_ids=ids).logits, atol=1e-3)
        before = {k: v.clone() for k, v in policy.state_dict().items()}
        base.load_state_dict(merge_lora(policy.state_dict(), lora_scaling(policy)))
        assert torch.allclose(base(input_ids=ids).logits, adapted, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())
    # peft's own merge agrees
    peft_merged = policy.merge_and_unload().state_dict()
    assert all(torch.allclose(peft_merged[k], v, atol=1e-6) for k, v in base.state_dict().items())


def test_lora_settings_are_checked_in_one_line(untied_model_dir, tiny_model_dir):
    for overrides, message in [
        (["model.lora_rank=-1"], "model.lora_rank"),
        (["model.lora_rank=8", "model.lora_alpha=0"], "model.lora_alpha"),
        (["model.lora_rank=8", "model.lora_dropout=1.0"], "model.lora_dropout"),
        (["model.lora_rank=8", "model.lora_target_modules=[]"], "model.lora_target_modules"),
        (["model.lora_rank=8", "model.reference_dtype=bfloat16"], "adapters off"),
    ]:
        with pytest.raises(ScoreError, match=message):
            load_config(None, overrides)
    for targets, message in (("no_such_layer", "no_such_layer"), ("embed_tokens", "not a linear layer")):
        cfg = load_config(None, ["model.lora_rank=8", f"model.lora_target_modules=[{targets}]"])
        with pytest.raises(ScoreError, match=message):
            add_lora(AutoModelForCausalLM.from_pretrained(untied_model_dir), cfg.model)
    # a tied output layer (tiny_model_dir ties it, as Qwen2.5-1.5B does): merged, its adapter would move the embeddings
    cfg = load_config(None, ["model.lora_rank=8", "model.lora_target_modules=[q_proj,lm_head]"])
    with pytest.raises(ScoreError, match="lm_head shares its weight with the input embeddings"):
        add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), cfg.model)


def test_lora_training_moves_the_adapters_only_and_raises_reward(tmp_path, untied_model_dir, sample_jsonl, monkeypatch):
    finished = record_calls(monkeypatch, "finish")
    cfg = tiny_config(tmp_path, untied_model_dir, sample_jsonl, "train.stage1_steps=30", "train.stage2_steps=0",
                      *RL_BATCH, "train.lr=1e-2", *LORA, "model.lora_merge_on_save=true")  # fmt: skip
    run = train(cfg, reward_fn=contains("y"))
    rows = metrics(run)
    assert rows[0]["kl_t1"] == 0.0 and rows[0]["kl_t2"] == 0.0  # the reference is the policy before any update
    start, end = mean(r["reward_t2"] for r in rows[:5]), mean(r["reward_t2"] for r in rows[-5:])
    assert end > start + 0.4, (start, end)
    (((finished_run,), _),) = finished
    policy = finished_run.policy
    base = load_file(untied_model_dir / "model.safetensors")
    state = policy.state_dict()
    plain = lambda name: name.removeprefix("base_model.model.").replace(".base_layer.", ".")  # noqa: E731
    frozen = {plain(k): v for k, v in state.items() if "lora_" not in k}
    assert frozen.keys() == base.keys() and all(torch.equal(frozen[k], base[k]) for k in base)
    assert any(v.abs().sum() > 0 for k, v in state.items() if "lora_B" in k)  # B starts at 0
    # the checkpoint holds the adapters and their optimizer state, not the frozen base
    saved = dcp.FileSystemReader(run / "checkpoints" / "step_30").read_metadata().state_dict_metadata
    model_keys = [k for k in saved if k.startswith("model.")]
    assert model_keys and all("lora_" in k for k in model_keys)
    assert any(k.startswith("optimizer.state.") and "lora_A" in k and k.endswith("exp_avg") for k in saved)
    # final/: merged weights as a plain model, and the adapter as peft saves it
    final = run / "final"
    merged = load_file(final / "model.safetensors")
    expected = merge_lora(state, lora_scaling(policy))
    assert merged.keys() == expected.keys() and all(torch.equal(merged[k], expected[k]) for k in merged)
    assert {p.name for p in (final / "adapter").iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    from_adapter = load_model(final / "adapter", cfg.model, torch.float32).state_dict()  # base + adapter, merged
    assert all(torch.allclose(from_adapter[k], merged[k], atol=1e-6) for k in merged)


@pytest.mark.usefixtures("fresh_accelerate_state")
def test_bf16_autocast_lora_has_zero_kl_at_first_and_samples_the_merged_copy(
    tmp_path, untied_model_dir, sample_jsonl, monkeypatch
):
    # The GPU path, emulated on the CPU: fp32 weights under bf16 autocast. The reference (adapters off) takes the
    # policy's own numeric path, so the first KL is exactly 0; the HF engine samples a bf16 copy that gets the merged
    # weights after every step. Activation checkpointing recomputes the layers and still reaches the adapters; the
    # adapters keep their dropout (the base model's is off).
    monkeypatch.setattr(trainer_module, "weight_dtypes", lambda model, on_gpu: weight_dtypes(model, on_gpu=True))
    opened, finished = record_calls(monkeypatch, "open_engine"), record_calls(monkeypatch, "finish")
    cfg = tiny_config(tmp_path, untied_model_dir, sample_jsonl, "rollout.engine=hf", "train.stage1_steps=1",
                      "train.stage2_steps=1", "train.lr=1e-2", "model.gradient_checkpointing=true",
                      "model.lora_dropout=0.25", *LORA)  # fmt: skip
    rows = metrics(train(cfg, reward_fn=contains("y")))
    assert rows[0]["kl_t1"] == 0.0 and rows[0]["kl_t2"] == 0.0 and rows[1]["kl_t1"] > 0
    ((_, engine),), (((finished_run,), _),) = opened, finished
    policy = finished_run.policy
    assert engine.holds_weights and engine.model.dtype == torch.bfloat16
    inside = [v.abs().sum() > 0 for k, v in policy.state_dict().items() if ".layers." in k and "lora_B" in k]
    assert inside and all(inside)  # the adapters in the checkpointed layers got gradients (not only lm_head's)
    dropouts = [module.p for name, module in policy.named_modules() if name.endswith(".lora_dropout.default")]
    assert dropouts and set(dropouts) == {0.25}
    merged = merge_lora(policy.state_dict(), lora_scaling(policy))
    for name, param in engine.model.named_parameters():
        assert torch.equal(param, merged[name].to(torch.bfloat16)), name


def test_lora_resume_ends_with_the_same_adapters(tmp_path, untied_model_dir, sample_jsonl):
    overrides = ["train.stage1_steps=2", "train.stage2_steps=2", "train.save_every=2", "train.lr=1e-2", *LORA]
    straight = train(tiny_config(tmp_path / "a", untied_model_dir, sample_jsonl, *overrides), contains("y"))
    with pytest.raises(KeyboardInterrupt):  # step 3 dies after the step-2 checkpoint
        train(tiny_config(tmp_path / "b", untied_model_dir, sample_jsonl, *overrides), crash_in_step(3, contains("y")))
    resumed = train(
        tiny_config(tmp_path / "b", untied_model_dir, sample_jsonl, *overrides, "train.resume=true"), contains("y")
    )
    # final/ without lora_merge_on_save: the adapter only, as peft saves it
    assert not (straight / "final" / "model.safetensors").exists()
    a = load_file(straight / "final" / "adapter_model.safetensors")
    b = load_file(resumed / "final" / "adapter_model.safetensors")
    assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["reward_t2"] for r in metrics(straight)] == [r["reward_t2"] for r in metrics(resumed)]


def test_evaluate_loads_a_final_folder_that_holds_only_the_adapter(tmp_path, untied_model_dir, sample_jsonl):
    base = shutil.copytree(untied_model_dir, tmp_path / "base")  # its weights change below
    cfg = tiny_config(tmp_path, base, sample_jsonl, "train.stage1_steps=1", "train.stage2_steps=0",
                      "train.lr=1e-2", "train.save_every=0", *LORA, f"eval.source={sample_jsonl}",
                      "eval.max_new_tokens=4", "eval.max_problems=2", "rollout.engine=hf")  # fmt: skip
    run = train(cfg, reward_fn=contains("y"))
    assert not (run / "final" / "config.json").exists()
    out = evaluate(cfg)
    assert (out / "metrics.json").is_file() and out.parent == run / "eval"
    # the adapted model is the base's weights plus the adapter: other base weights are another model, evaluated anew
    weights = load_file(base / "model.safetensors")
    save_file({k: v + 0.01 for k, v in weights.items()}, base / "model.safetensors", metadata={"format": "pt"})
    assert evaluate(cfg) == out and len(list(run.glob("eval/*.superseded-*"))) == 1


def test_lora_under_fsdp2_on_two_processes_matches_ddp_and_resumes_exactly(tmp_path):
    # configs/accelerate/fsdp.yaml on 2 gloo processes: FSDP2 shards the Transformers model inside peft's wrapper
    # (adapters and frozen base), the reference is the same sharded model with adapters off.
    lora = ["model.lora_rank=4", "model.lora_merge_on_save=true", "train.micro_batch_size=2"]
    overrides = tiny_cli_overrides(tmp_path) + [x for option in lora for x in ("--set", option)]
    assert run_cli("--task", "download", *overrides, cwd=tmp_path).returncode == 0
    sharded = run_cli("--task", "train", *overrides, "--set", "train.run_name=fsdp", cwd=tmp_path, launcher=FSDP)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert "policy sharded with FSDP2 over 2 processes" in sharded.stdout
    first = metrics(tmp_path / "runs" / "fsdp")[0]
    assert first["kl_t1"] == 0.0 and first["kl_t2"] == 0.0
    replicated = run_cli("--task", "train", *overrides, "--set", "train.run_name=ddp", cwd=tmp_path, launcher=DDP)
    assert replicated.returncode == 0, replicated.stderr[-3000:]
    adapter = lambda run: load_file(tmp_path / "runs" / run / "final" / "adapter" / "adapter_model.safetensors")  # noqa: E731
    a, b = adapter("fsdp"), adapter("ddp")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)
    merged = load_file(tmp_path / "runs" / "fsdp" / "final" / "model.safetensors")
    base = load_file(tmp_path / "base_models" / "tiny-qwen2" / "model.safetensors")
    assert merged.keys() == base.keys() and any(not torch.equal(merged[k], base[k]) for k in base)

    # exact resume of sharded adapters and their optimizer state: Stage I alone, then resumed with Stage II added
    stage1 = run_cli(*overrides, "--task", "train", "--set", "train.stage2_steps=0", cwd=tmp_path, launcher=FSDP)
    assert stage1.returncode == 0, stage1.stderr[-3000:]
    resumed = run_cli(*overrides, "--task", "train", "--set", "train.resume=true", cwd=tmp_path, launcher=FSDP)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    c = adapter("tiny")
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_the_compiled_hf_path_samples_the_adapted_model(untied_model_dir, monkeypatch):
    # rollout.hf_compile=on (auto on a GPU) over a LoRA policy: the decode step is compiled with the adapters inside
    # the Transformers model and decodes what eager decoding of the adapted model does. torch.compile's graph capture
    # with an eager backend, as test_engines does (inductor's code generation is too slow for CI on a CPU).
    monkeypatch.setattr(hf, "COMPILE_BACKEND", lambda graph, example_inputs: graph.forward)
    torch._dynamo.reset()
    policy = perturbed_lora(untied_model_dir)
    eos = policy.generation_config.eos_token_id
    greedy = Sampling(max_new_tokens=4, stop_ids=[eos], pad_id=0, greedy=True)
    adapted = HFEngine(transformers_model(policy)).sample(PROMPTS, greedy).ids
    with policy.disable_adapter():
        assert HFEngine(transformers_model(policy)).sample(PROMPTS, greedy).ids != adapted
    assert HFEngine(transformers_model(policy), compile=True).sample(PROMPTS, greedy).ids == adapted
    torch._dynamo.reset()


def test_an_experiment_with_supervised_rows_refuses_lora_in_one_line(tmp_path):
    from score.experiment import run_experiment

    cfg = load_config(None, [f"train.output_dir={tmp_path}", "experiment.rows=[base,star,score]", "model.lora_rank=8"])
    with pytest.raises(ScoreError, match=r"\['star'\].*model.lora_rank"):
        run_experiment(cfg)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_an_adapter_folder_names_its_base_or_is_one_error_line(tmp_path, untied_model_dir):
    perturbed_lora(untied_model_dir).save_pretrained(tmp_path / "adapter")
    config = tmp_path / "adapter" / "adapter_config.json"
    assert adapter_base(tmp_path / "adapter") == untied_model_dir and adapter_base(untied_model_dir) is None
    written = json.loads(config.read_text())
    config.write_text(json.dumps({**written, "base_model_name_or_path": str(tmp_path / "moved")}))
    with pytest.raises(ScoreError, match="holds no model now"):
        load_model(tmp_path / "adapter", load_config(None).model, torch.float32)
    for damaged in ("{not json", "[]"):
        config.write_text(damaged)
        with pytest.raises(ScoreError, match="adapter_config.json is unreadable"):
            adapter_base(tmp_path / "adapter")


def test_a_bfloat16_base_trains_float32_adapters_and_samples_itself(
    tmp_path, untied_model_dir, sample_jsonl, monkeypatch
):
    # model.dtype=bfloat16: the frozen base in bf16 (half of fp32), the adapters in fp32 (peft's default); the policy
    # computes in bf16 without autocast, so the HF engine samples it directly, with no copy to sync.
    finished = record_calls(monkeypatch, "finish")
    cfg = tiny_config(tmp_path, untied_model_dir, sample_jsonl, "train.stage1_steps=2", "train.stage2_steps=0",
                      "train.lr=1e-2", "model.dtype=bfloat16", "rollout.engine=hf", *LORA)  # fmt: skip
    rows = metrics(train(cfg, reward_fn=contains("y")))
    assert rows[0]["kl_t1"] == 0.0 and rows[0]["kl_t2"] == 0.0 and rows[1]["kl_t1"] > 0
    (((run,), _),) = finished
    assert run.engine is None
    dtypes = {("lora_" in name, param.dtype) for name, param in run.policy.named_parameters()}
    assert dtypes == {(True, torch.float32), (False, torch.bfloat16)}


def test_the_hf_engine_copy_of_an_adapter_folder_is_its_merged_model(tmp_path, untied_model_dir):
    # Training from an adapter-only folder (model.name=<run>/final) under bf16 autocast: the HF engine's bf16 copy is
    # the base with the adapter merged, the model the policy starts as, under the plain names the syncs send.
    perturbed_lora(untied_model_dir).save_pretrained(tmp_path / "adapter")
    start = load_model(tmp_path / "adapter", load_config(None).model, torch.float32).state_dict()
    policy = AutoModelForCausalLM.from_pretrained(untied_model_dir, dtype=torch.float32)
    engine = open_engine(RolloutConfig(engine="hf"), tmp_path / "adapter", seed=0, dtype=torch.bfloat16, model=policy)
    copy = engine.model.state_dict()
    assert engine.holds_weights and copy.keys() == start.keys()
    assert all(torch.allclose(copy[k].float(), start[k], rtol=1e-2, atol=1e-3) for k in start)
    engine.load_weights(start)  # a sync
    assert all(torch.equal(copy[k], start[k].to(torch.bfloat16)) for k in start)


def test_new_adapters_on_an_adapter_only_folder_are_refused(tmp_path, tiny_model_dir, sample_jsonl):
    # They were trained and saved as adapters of the first base, which loads without the old adapter (issue 26).
    adapter, tied = tmp_path / "adapter", "model.lora_target_modules=[q_proj,v_proj]"  # the tiny model ties lm_head
    perturbed_lora(tiny_model_dir, tied).save_pretrained(adapter)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(adapter)  # as a run's final/ holds it
    assert not (adapter / "config.json").exists()
    with pytest.raises(ScoreError, match=f"model.name={adapter} holds a LoRA adapter only") as error:
        train(tiny_config(tmp_path, adapter, sample_jsonl, *LORA, tied), contains("y"))
    assert "\n" not in str(error.value) and not (tmp_path / "runs" / "tiny" / "metrics.jsonl").exists()


def test_an_adapter_only_final_with_the_vllm_engine_is_refused_before_training(
    tmp_path, untied_model_dir, sample_jsonl, monkeypatch
):
    # vLLM cannot load an adapter-only final/, so run.slurm's evaluation would fail only after the whole run
    monkeypatch.setattr(trainer_module, "resolve_engine_name", lambda name: "vllm")
    cfg = tiny_config(tmp_path, untied_model_dir, sample_jsonl, *LORA)
    with pytest.raises(ScoreError, match="model.lora_merge_on_save=false with the vllm engine"):
        train(cfg, reward_fn=contains("y"))
    assert not (tmp_path / "runs" / cfg.train.run_name).exists()
