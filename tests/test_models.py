"""FSDP2 helpers of models.py on 2 gloo processes (torch.multiprocessing), the way the trainer uses them."""

import importlib.util
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from score.config import ModelConfig, ScoreError
from score.models import check_sharding_settings, disable_dropout, load_model, resolve_model_path, weight_dtypes
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

TIMEOUT = 300  # seconds; a process stuck in a collective the other never joins fails the test instead of hanging


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sharded_worker(rank: int, world: int, port: int, model_dir: str, out: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    from accelerate import Accelerator
    from score.models import full_state_dict, generation_model, gradient_sync, is_sharded, shard_policy

    accelerator = Accelerator(cpu=True)
    original = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    policy = shard_policy(AutoModelForCausalLM.from_pretrained(model_dir))
    reference = shard_policy(AutoModelForCausalLM.from_pretrained(model_dir).eval().requires_grad_(False))
    shards = {name: p.to_local().numel() for name, p in policy.named_parameters()}

    full = full_state_dict(accelerator, policy)  # every process gets the full tensors
    saved = full_state_dict(accelerator, policy, main_only=True)  # the main process only, on the CPU
    half = full_state_dict(accelerator, policy, dtype=torch.bfloat16)  # gathered one tensor at a time, cast at once

    # Generation from gathered parameters: each process runs its own number of forward passes (2 or 12 new
    # tokens); with a collective per forward the two would deadlock.
    prompt = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():  # the frozen reference sharded like the policy scores like the whole model
        reference_agrees = torch.equal(reference(input_ids=prompt).logits, original(input_ids=prompt).logits)
    new_tokens = 2 if rank == 0 else 12
    with generation_model(accelerator, policy) as model:
        ids = model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    expected = original.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)

    # Back to sharded, it trains: each backward leaves only this process's shard of the (averaged) gradients, even
    # unsynchronised, so no process ever holds unsharded fp32 gradients; they add up to the full gradients.
    policy.train()
    sharded_after_unsynced = None
    for sync in (False, True):
        with gradient_sync(accelerator, policy, sync):
            policy(input_ids=prompt).logits.sum().backward()
        if not sync:
            sharded_after_unsynced = all(
                p.grad is not None and p.grad.to_local().numel() == p.to_local().numel() for p in policy.parameters()
            )
    grads = {name: p.grad.full_tensor() for name, p in policy.named_parameters()}
    original.train()
    for _ in range(2):
        original(input_ids=prompt).logits.sum().backward()
    expected_grads = {name: p.grad for name, p in original.named_parameters()}
    torch.save(
        {
            "sharded": is_sharded(policy),
            "shards": shards,
            "full": full,
            "saved": saved,
            "half": half,
            "generated": ids,
            "expected": expected,
            "grads_local": all(p.grad is not None for p in policy.parameters()),
            "sharded_after_unsynced": sharded_after_unsynced,
            "reference_agrees": reference_agrees,
            "grads": grads,
            "expected_grads": expected_grads,
        },
        Path(out) / f"rank{rank}.pt",
    )
    torch.distributed.destroy_process_group()


def test_shard_policy_gathers_full_weights_and_generates_per_process(tmp_path, tiny_model_dir):
    context = mp.start_processes(
        sharded_worker,
        args=(2, free_port(), str(tiny_model_dir), str(tmp_path)),
        nprocs=2,
        join=False,
        start_method="spawn",
    )
    while not context.join(timeout=TIMEOUT):
        pass
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for result in results:
        assert result["sharded"] and result["grads_local"] and result["sharded_after_unsynced"]
        assert result["reference_agrees"]
        assert result["grads"].keys() == result["expected_grads"].keys()
        for name, grad in result["grads"].items():
            torch.testing.assert_close(grad, result["expected_grads"][name], rtol=1e-4, atol=1e-5)
        assert result["full"].keys() == original.keys()
        assert all(torch.equal(result["full"][k], original[k]) for k in original)
        assert all(torch.equal(result["half"][k], original[k].to(torch.bfloat16)) for k in original)
        assert result["half"]["lm_head.weight"].data_ptr() == result["half"]["model.embed_tokens.weight"].data_ptr()
        assert torch.equal(result["generated"], result["expected"])
    assert results[0]["generated"].shape[1] == 4 + 2 and results[1]["generated"].shape[1] == 4 + 12
    # the parameters really are split: each process holds about half of every decoder layer's weights
    layer = "model.layers.0.mlp.up_proj.weight"
    assert results[0]["shards"][layer] + results[1]["shards"][layer] == original[layer].numel()
    assert results[0]["shards"][layer] == original[layer].numel() // 2
    saved = results[0]["saved"]
    assert saved.keys() == original.keys() and results[1]["saved"] == {}
    assert saved["lm_head.weight"].data_ptr() == saved["model.embed_tokens.weight"].data_ptr()  # still tied


LORA = ModelConfig(lora_rank=4, lora_target_modules=["q_proj", "v_proj"])


def small_update_lora(model_dir: str) -> torch.nn.Module:
    """The tiny model with adapters whose B @ A is a few bf16 steps of W: what a few updates leave."""
    from score.models import add_lora

    policy = add_lora(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), LORA)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=1e-4, generator=torch.Generator().manual_seed(len(name)))
    return policy


def lora_sync_worker(rank: int, world: int, port: int, model_dir: str, out: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    from types import SimpleNamespace

    from accelerate import Accelerator
    from score.models import shard_policy
    from score.trainer import sync_engine

    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    loaded: dict = {}
    engine = SimpleNamespace(load_weights=loaded.update)
    policy = shard_policy(small_update_lora(model_dir))
    sync_engine(SimpleNamespace(accelerator=accelerator, policy=policy, engine=engine, times={}))
    if rank == 0:
        torch.save({k: v.to(torch.bfloat16) for k, v in loaded.items()}, Path(out) / "synced.pt")
    torch.distributed.destroy_process_group()


def test_a_sharded_lora_policy_reaches_a_bf16_engine_rounded_once(tmp_path, tiny_model_dir):
    # Under FSDP2, W, A and B were cast to bf16 before the merge, so most small updates were lost (issue 26);
    # the unsharded path merges in float32 and rounds once. The engine must get the same from both.
    context = mp.start_processes(
        lora_sync_worker, args=(2, free_port(), str(tiny_model_dir), str(tmp_path)), nprocs=2, join=False,
        start_method="spawn",
    )  # fmt: skip
    while not context.join(timeout=TIMEOUT):
        pass
    synced = torch.load(tmp_path / "synced.pt", weights_only=True)
    from score.models import lora_scaling, merge_lora

    policy = small_update_lora(str(tiny_model_dir))  # unsharded: merged in float32, then rounded once
    expected = {k: v.to(torch.bfloat16) for k, v in merge_lora(policy.state_dict(), lora_scaling(policy)).items()}
    adapted = [name for name in expected if name.endswith(("q_proj.weight", "v_proj.weight"))]
    assert synced.keys() == expected.keys() and adapted
    assert all(torch.equal(synced[name], expected[name]) for name in adapted)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert all(not torch.equal(synced[name], base[name].to(torch.bfloat16)) for name in adapted)  # updates kept


def test_dropout_is_off_so_train_mode_scores_like_sampling(tiny_model_dir):
    config = Qwen2Config.from_pretrained(tiny_model_dir)
    config.attention_dropout = 0.5
    model = Qwen2ForCausalLM(config)
    model.lm_head = torch.nn.Sequential(model.lm_head, torch.nn.Dropout(0.5))
    disable_dropout(model)
    model.train()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        train_logits = model(input_ids=ids).logits
        model.eval()
        assert torch.equal(train_logits, model(input_ids=ids).logits)


def test_fsdp_settings_the_trainer_cannot_honour_are_one_error(monkeypatch):
    monkeypatch.setenv("FSDP_VERSION", "2")
    check_sharding_settings()
    with pytest.raises(ScoreError, match="train.micro_batch_tokens with FSDP2") as e:
        check_sharding_settings(micro_batch_tokens=4096)
    assert "\n" not in str(e.value)
    monkeypatch.setenv("FSDP_OFFLOAD_PARAMS", "true")
    with pytest.raises(ScoreError, match="fsdp_offload_params"):
        check_sharding_settings()
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ScoreError, match="FSDP2 only"):
        check_sharding_settings()


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed here")
def test_an_attention_kernel_without_its_package_is_one_line(tiny_model_dir):
    config = ModelConfig(attn_implementation="flash_attention_2")
    with pytest.raises(ScoreError, match="model.attn_implementation=flash_attention_2: .*FlashAttention2") as e:
        load_model(tiny_model_dir, config, torch.float32)
    assert "\n" not in str(e.value)


def test_float16_weights_are_refused_on_a_cpu_only():
    with pytest.raises(ScoreError, match="model.dtype=float16 on a CPU") as e:
        weight_dtypes(ModelConfig(dtype="float16"), on_gpu=False)
    assert "\n" not in str(e.value)
    assert weight_dtypes(ModelConfig(dtype="float16"), on_gpu=True) == (torch.float16, torch.float16, "no")
    assert weight_dtypes(ModelConfig(dtype="bfloat16"), on_gpu=False) == (torch.bfloat16, torch.bfloat16, "no")


def test_reference_dtype_bfloat16_halves_the_reference_only():
    for on_gpu, mixed in ((True, "bf16"), (False, "no")):
        config = ModelConfig(reference_dtype="bfloat16")
        assert weight_dtypes(config, on_gpu=on_gpu) == (torch.float32, torch.bfloat16, mixed)
        assert weight_dtypes(ModelConfig(), on_gpu=on_gpu) == (torch.float32, torch.float32, mixed)


def test_a_folder_that_is_no_model_is_named_as_such(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScoreError, match=rf"^{tmp_path / 'empty'} is a folder but not a model: it holds no config"):
        resolve_model_path(str(tmp_path / "empty"), str(tmp_path / "base_models"))
    with pytest.raises(ScoreError, match="not found in"):
        resolve_model_path(str(tmp_path / "missing"), str(tmp_path / "base_models"))
