import itertools
import math
from dataclasses import dataclass

import pytest
import torch
from score.objectives import (
    add_sampler_drift,
    attempt_advantages,
    batch_mean_baseline,
    compute_baseline,
    kl_coefficients,
    kl_per_token,
    kl_rewards_to_go,
    leave_one_out_baseline,
    loss_units,
    process_advantages,
    score_loss,
    shaped_reward,
    token_logprobs,
    token_logprobs_and_entropy,
    truncated_importance_weights,
)

LN3 = math.log(3)


def reference_logprobs(logits, ids):
    logp = torch.log_softmax(logits.double(), -1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    return torch.cat([torch.zeros(ids.shape[0], 1, dtype=logp.dtype), logp], dim=1)


# --- log-probs and entropy ---------------------------------------------------------------------


def test_token_logprobs_by_hand():
    # V = 2. Position 0 logits [ln 3, 0] -> p = (3/4, 1/4); position 1 logits [0, 0] -> (1/2, 1/2).
    logits = torch.tensor([[[LN3, 0.0], [0.0, 0.0], [5.0, 5.0]]])
    ids = torch.tensor([[0, 1, 0]])
    out = token_logprobs(logits, ids, chunk_size=1)
    torch.testing.assert_close(out, torch.tensor([[0.0, math.log(1 / 4), math.log(1 / 2)]]))
    assert out.dtype == torch.float32


@pytest.mark.parametrize("chunk_size", [1, 3, 5, 1024])
def test_token_logprobs_matches_log_softmax(chunk_size):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g) * 4
    ids = torch.randint(0, 11, (3, 5), generator=g)
    out = token_logprobs(logits, ids, chunk_size).double()
    torch.testing.assert_close(out, reference_logprobs(logits, ids), atol=1e-5, rtol=1e-5)


def test_token_logprobs_bf16_upcasts_per_chunk():
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(2, 7, 300, generator=g) * 6).bfloat16()
    ids = torch.randint(0, 300, (2, 7), generator=g)
    out = token_logprobs(logits, ids, chunk_size=4)
    assert out.dtype == torch.float32
    # Same bf16 values, log-softmax in float64: the only error left is float32 rounding.
    torch.testing.assert_close(out.double(), reference_logprobs(logits, ids), atol=1e-5, rtol=1e-5)


def test_token_logprobs_gradient_matches_autograd():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 6, dtype=torch.float64, generator=g, requires_grad=True)
    ids = torch.randint(0, 6, (2, 4), generator=g)
    torch.autograd.gradcheck(lambda x: token_logprobs(x, ids, chunk_size=3), (logits,))
    weights = torch.randn(2, 4, dtype=torch.float64, generator=g)
    (grad,) = torch.autograd.grad((token_logprobs(logits, ids, chunk_size=3) * weights).sum(), logits)
    (expected,) = torch.autograd.grad((reference_logprobs(logits, ids) * weights).sum(), logits)
    torch.testing.assert_close(grad, expected)


def test_token_logprobs_bf16_gradient():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(2, 5, 50, generator=g) * 3
    ids = torch.randint(0, 50, (2, 5), generator=g)
    weights = torch.randn(2, 5, generator=g)
    logits = base.bfloat16().requires_grad_()
    (grad,) = torch.autograd.grad((token_logprobs(logits, ids, chunk_size=3) * weights).sum(), logits)
    assert grad.dtype == torch.bfloat16
    ref = base.bfloat16().double().requires_grad_()
    (expected,) = torch.autograd.grad((reference_logprobs(ref, ids) * weights).sum(), ref)
    torch.testing.assert_close(grad.double(), expected, atol=1e-2, rtol=1e-2)


def test_token_logprobs_keeps_no_float32_copy_of_the_logits():
    logits = torch.randn(4, 16, 512).bfloat16().requires_grad_()
    ids = torch.randint(0, 512, (4, 16))

    def big_float32_saved(fn):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            fn()
        return [t for t in saved if t.dtype == torch.float32 and t.numel() >= logits.numel()]

    # The naive version keeps a float32 [N, T, V] tensor for its backward pass; the check sees it.
    assert big_float32_saved(lambda: torch.log_softmax(logits.float(), -1))
    assert not big_float32_saved(lambda: token_logprobs(logits, ids, chunk_size=8))


def test_token_entropy():
    # Uniform over 4 -> ln 4; (3/4, 1/4, 0-ish, 0-ish) -> -(3/4 ln 3/4 + 1/4 ln 1/4).
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [LN3, 0.0, -100.0, -100.0], [1.0, 2.0, 3.0, 4.0]]])
    out = token_logprobs_and_entropy(logits, torch.zeros(1, 3, dtype=torch.long), chunk_size=2)[1]
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    torch.testing.assert_close(out, torch.tensor([[0.0, math.log(4), h]]))
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 6, 9, generator=g).bfloat16()
    p = torch.log_softmax(logits.double(), -1)
    expected = -(p.exp() * p).sum(-1)[:, :-1]
    entropy = token_logprobs_and_entropy(logits, torch.zeros(2, 6, dtype=torch.long), chunk_size=5)[1]
    torch.testing.assert_close(entropy[:, 1:].double(), expected, atol=1e-5, rtol=1e-5)


# --- KL ----------------------------------------------------------------------------------------


def test_kl_values_by_hand():
    logp = torch.tensor([-1.0, -2.0, -0.7])
    ref = torch.tensor([-2.0, -1.0, -0.7])
    torch.testing.assert_close(kl_per_token(logp, ref, "k1"), torch.tensor([1.0, -1.0, 0.0]))
    # k3 = e^d - d - 1, d = ref - logp: d = -1 -> e^-1; d = 1 -> e - 2; d = 0 -> 0.
    torch.testing.assert_close(kl_per_token(logp, ref, "k3"), torch.tensor([0.3678794, 0.7182818, 0.0]))


def test_k3_does_not_overflow():
    kl = kl_per_token(torch.tensor([-200.0]), torch.tensor([0.0]), "k3")
    assert torch.isfinite(kl).all()


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_kl_gradient_is_log_ratio(estimator):
    # Straight-through: d kl / d logp = logp - ref for both estimators (the k2 gradient).
    logp = torch.tensor([-1.0, -2.0, -0.7], requires_grad=True)
    ref = torch.tensor([-2.0, -1.0, -0.7])
    kl_per_token(logp, ref, estimator).sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([1.0, -1.0, 0.0]))


def test_kl_gradient_is_the_true_kl_gradient():
    # One token over 3 choices: sum_a pi(a) * (logp_a - ref_a) * grad logp_a equals grad KL(pi || ref).
    theta = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    ref = torch.log_softmax(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), -1)
    logp = torch.log_softmax(theta, -1)
    (true_grad,) = torch.autograd.grad((logp.exp() * (logp - ref)).sum(), theta)
    logp = torch.log_softmax(theta, -1)
    surrogate = (logp.exp().detach() * kl_per_token(logp, ref, "k3")).sum()  # expectation over a ~ pi
    (grad,) = torch.autograd.grad(surrogate, theta)
    torch.testing.assert_close(grad, true_grad)


def test_unknown_estimator():
    with pytest.raises(ValueError, match="k2"):
        kl_per_token(torch.zeros(1), torch.zeros(1), "k2")


# --- baselines, shaping, advantages ------------------------------------------------------------


def test_leave_one_out_baseline():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0])
    torch.testing.assert_close(leave_one_out_baseline(r, 2), torch.tensor([0.0, 1.0, 1.0, 0.0]))
    torch.testing.assert_close(leave_one_out_baseline(r, 4), torch.tensor([1 / 3, 2 / 3, 2 / 3, 1 / 3]))
    two_columns = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    torch.testing.assert_close(
        leave_one_out_baseline(two_columns, 2), torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    )
    for bad in (1, 3):
        with pytest.raises(ValueError):
            leave_one_out_baseline(r, bad)


def test_batch_mean_and_no_baseline():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0])
    torch.testing.assert_close(batch_mean_baseline(r), torch.tensor([0.5, 0.5, 0.5, 0.5]))
    torch.testing.assert_close(compute_baseline(r, "batch", 2), torch.tensor([0.5, 0.5, 0.5, 0.5]))
    torch.testing.assert_close(compute_baseline(r, "none", 2), torch.zeros(4))
    with pytest.raises(ValueError):
        compute_baseline(r, "mean", 2)


def test_shaped_reward_alpha_10():
    r1 = torch.tensor([0.0, 1.0, 0.0, 1.0])
    r2 = torch.tensor([1.0, 1.0, 0.0, 0.0])
    # fixed: 1 + 10; kept: 1; still wrong: 0; broken: 0 - 10
    torch.testing.assert_close(shaped_reward(r1, r2, 10.0), torch.tensor([11.0, 1.0, 0.0, -10.0]))


# Two problems x two samples. Columns: r(y1), r(y2).
REWARDS = torch.tensor([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])


def test_stage1_advantages():
    adv = attempt_advantages(REWARDS, stage=1, alpha=10.0, baseline="loo", group_size=2)
    # A1 = 0; A2 = r2 - loo(r2) = [1, 1, 0, 1] - [1, 1, 1, 0]
    torch.testing.assert_close(adv, torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, -1.0], [0.0, 1.0]]))


def test_stage2_advantages():
    adv = attempt_advantages(REWARDS, stage=2, alpha=10.0, baseline="loo", group_size=2)
    # A1 = r1 - loo(r1) = [0, 1, 1, 1] - [1, 0, 1, 1] = [-1, 1, 0, 0]
    # shaped = [1 + 10, 1, 0 - 10, 1]; loo = [1, 11, 1, -10]; A2 = [10, -10, -11, 11]
    expected = torch.tensor([[-1.0, 10.0], [1.0, -10.0], [0.0, -11.0], [0.0, 11.0]])
    torch.testing.assert_close(adv, expected)
    batch = attempt_advantages(REWARDS, stage=2, alpha=0.0, baseline="batch", group_size=2)
    # r1 mean 0.75, r2 mean 0.75
    torch.testing.assert_close(batch, torch.tensor([[-0.75, 0.25], [0.25, 0.25], [0.25, -0.75], [0.25, 0.25]]))


def test_stage2_attempt1_gets_no_reward_from_attempt2():
    other = REWARDS.clone()
    other[:, 1] = torch.tensor([0.0, 0.0, 1.0, 0.0])
    for baseline in ("loo", "batch", "none"):
        a = attempt_advantages(REWARDS, 2, 10.0, baseline, 2)
        b = attempt_advantages(other, 2, 10.0, baseline, 2)
        torch.testing.assert_close(a[:, 0], b[:, 0])
        assert not torch.equal(a[:, 1], b[:, 1])


def test_single_attempt_advantages():
    r = torch.tensor([[1.0], [0.0], [0.0], [0.0]])
    for stage in (1, 2):
        adv = attempt_advantages(r, stage, 10.0, "none", 2)
        torch.testing.assert_close(adv, r)
    torch.testing.assert_close(attempt_advantages(r, 1, 10.0, "loo", 2), torch.tensor([[1.0], [-1.0], [0.0], [0.0]]))


def test_kl_coefficients():
    assert kl_coefficients(1, 2, beta1=0.01, beta2=0.1) == (0.1, 0.01)
    assert kl_coefficients(2, 2, beta1=0.01, beta2=0.1) == (0.01, 0.01)
    assert kl_coefficients(1, 1, beta1=0.01, beta2=0.1) == (0.01,)
    assert kl_coefficients(2, 1, beta1=0.01, beta2=0.1) == (0.01,)
    with pytest.raises(ValueError):
        kl_coefficients(3, 2, 0.01, 0.1)


# --- the loss ----------------------------------------------------------------------------------

# Two conversations of 6 tokens: 0 = prompt / instruction / pad, k = attempt k.
MASK = torch.tensor([[0, 1, 1, 0, 2, 2], [0, 0, 1, 2, 2, 0]])
LOGP = torch.tensor([[-50.0, -1.0, -2.0, -50.0, -0.5, -1.5], [-50.0, -50.0, -1.0, -2.0, -1.0, -50.0]])
REF = torch.tensor([[-9.0, -1.5, -1.0, -9.0, -0.5, -2.5], [-9.0, -9.0, -2.0, -1.0, -1.0, -9.0]])
# logp - ref on attempt tokens: row 0: 0.5, -1 | 0, 1; row 1: 1 | -1, 0
ADV = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
COEFS = (0.1, 0.01)


def test_loss_token_mean_by_hand():
    loss, stats = score_loss(LOGP, REF, MASK, ADV, COEFS, "k1", normalizer=7.0)
    # -A * logp summed: row 0: 1*(1 + 2) + 2*(0.5 + 1.5) = 7; row 1: -1*1 + 0.5*(2 + 1) = 0.5 -> 7.5
    # KL (k1): attempt 1: 0.5 - 1 + 1 = 0.5 (x 0.1); attempt 2: 0 + 1 - 1 + 0 = 0 (x 0.01) -> 0.05
    torch.testing.assert_close(loss, torch.tensor(7.55 / 7))
    torch.testing.assert_close(stats["pg_loss"], torch.tensor(7.5 / 7))
    torch.testing.assert_close(stats["kl_loss"], torch.tensor(0.05 / 7))
    torch.testing.assert_close(stats["kl_sum"], torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(stats["tokens"], torch.tensor([3.0, 4.0]))
    loss, stats = score_loss(LOGP, REF, MASK, ADV, COEFS, "k3", normalizer=7.0)
    # k3(k1 = x) = e^-x + x - 1: x = 0.5 -> 0.1065307, x = -1 -> 0.7182818, x = 1 -> 0.3678794
    # attempt 1: 0.1065307 + 0.7182818 + 0.3678794 = 1.1926919; attempt 2: 0.3678794 + 0.7182818 = 1.0861612
    torch.testing.assert_close(stats["kl_sum"], torch.tensor([1.1926919, 1.0861612]))
    torch.testing.assert_close(loss, torch.tensor((7.5 + 0.11926919 + 0.010861612) / 7))


def test_loss_seq_mean_by_hand():
    loss, stats = score_loss(LOGP, REF, MASK, ADV, COEFS, "k1", normalizer=2.0, aggregation="seq_mean")
    # token terms -A*logp + beta*k1:
    # row 0, attempt 1: 1 + 0.05, 2 - 0.1 -> mean 1.475; attempt 2: 1 + 0, 3 + 0.01 -> mean 2.005
    # row 1, attempt 1: -1 + 0.1 -> -0.9; attempt 2: 1 - 0.01, 0.5 + 0 -> mean 0.745
    # (1.475 + 2.005 - 0.9 + 0.745) / 2
    torch.testing.assert_close(loss, torch.tensor(3.325 / 2))
    torch.testing.assert_close(stats["pg_loss"] + stats["kl_loss"], loss.detach())


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_loss_gradient_by_hand(estimator):
    logp = LOGP.clone().requires_grad_()
    loss, _ = score_loss(logp, REF, MASK, ADV, (0.0, 0.0), estimator, normalizer=7.0)
    loss.backward()
    # -A / normalizer on attempt tokens, zero on prompt and pad tokens
    expected = torch.tensor([[0.0, -1.0, -1.0, 0.0, -2.0, -2.0], [0.0, 0.0, 1.0, -0.5, -0.5, 0.0]]) / 7
    torch.testing.assert_close(logp.grad, expected)
    logp.grad = None
    loss, _ = score_loss(logp, REF, MASK, ADV, COEFS, estimator, normalizer=7.0)
    loss.backward()
    # plus beta_k * (logp - ref) / normalizer
    expected = torch.tensor([[0.0, -0.95, -1.1, 0.0, -2.0, -1.99], [0.0, 0.0, 1.1, -0.51, -0.5, 0.0]]) / 7
    torch.testing.assert_close(logp.grad, expected)


def test_prompt_and_pad_values_cannot_leak():
    logp = LOGP.clone()
    logp[MASK == 0] = float("-inf")
    ref = REF.clone()
    ref[MASK == 0] = float("nan")
    logp.requires_grad_()
    loss, _ = score_loss(logp, ref, MASK, ADV, COEFS, "k3", normalizer=7.0)
    loss.backward()
    expected, _ = score_loss(LOGP, REF, MASK, ADV, COEFS, "k3", normalizer=7.0)
    torch.testing.assert_close(loss, expected)
    assert torch.isfinite(logp.grad).all() and (logp.grad[MASK == 0] == 0).all()


def test_stage1_gives_no_policy_gradient_on_attempt1():
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    adv = attempt_advantages(rewards, stage=1, alpha=10.0, baseline="loo", group_size=2)
    coefs = kl_coefficients(1, 2, beta1=0.01, beta2=0.1)
    logp = LOGP.clone().requires_grad_()
    # ref = logp: the KL term has zero gradient, so what is left is the policy gradient alone.
    loss, _ = score_loss(logp, LOGP, MASK, adv, coefs, "k3", normalizer=7.0)
    loss.backward()
    assert (logp.grad[MASK == 1] == 0).all()
    assert (logp.grad[MASK == 2] != 0).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="coefficients"):
        score_loss(LOGP, REF, MASK, ADV, (0.1,), "k1", 7.0)
    with pytest.raises(ValueError, match="attempt 2"):
        score_loss(LOGP, REF, MASK, ADV[:, :1], (0.1,), "k1", 7.0)
    with pytest.raises(ValueError, match="aggregation"):
        score_loss(LOGP, REF, MASK, ADV, COEFS, "k1", 7.0, aggregation="sum")


def random_batch(n=8, t=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(n, t, dtype=torch.long)
    for i in range(n):  # prompt, attempt 1, instruction, attempt 2, pad; lengths vary per row
        a, b, c, d = sorted(torch.randint(1, t, (4,), generator=g).tolist())
        mask[i, a : b + 1] = 1
        mask[i, c + 1 : d + 1] = 2
    logp = -torch.rand(n, t, generator=g) * 3
    ref = -torch.rand(n, t, generator=g) * 3
    adv = torch.randn(n, 2, generator=g)
    return logp, ref, mask, adv


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean"])
@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_micro_batches_add_up_to_the_full_batch(aggregation, estimator):
    logp, ref, mask, adv = random_batch()
    normalizer = loss_units(mask, aggregation)
    full_logp = logp.clone().requires_grad_()
    full, full_stats = score_loss(full_logp, ref, mask, adv, COEFS, estimator, normalizer, aggregation)
    full.backward()

    micro_logp = logp.clone().requires_grad_()
    rows = torch.arange(8).split(2)
    assert sum(loss_units(mask[r], aggregation) for r in rows) == normalizer
    total, stats = 0.0, []
    for r in rows:
        loss, s = score_loss(micro_logp[r], ref[r], mask[r], adv[r], COEFS, estimator, normalizer, aggregation)
        loss.backward()
        total, stats = total + loss.detach(), stats + [s]
    torch.testing.assert_close(total, full.detach())
    torch.testing.assert_close(micro_logp.grad, full_logp.grad)
    for key in full_stats:
        torch.testing.assert_close(sum(s[key] for s in stats), full_stats[key])


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean"])
def test_processes_averaging_gradients_give_the_full_batch_gradient(aggregation):
    logp, ref, mask, adv = random_batch(seed=1)
    full_logp = logp.clone().requires_grad_()
    full, _ = score_loss(full_logp, ref, mask, adv, COEFS, "k3", loss_units(mask, aggregation), aggregation)
    full.backward()
    world = 2
    normalizer = loss_units(mask, aggregation) / world  # all-reduced units / world size
    grads = []
    for rows in torch.arange(8).chunk(world):  # each process holds its own rows
        local = logp[rows].clone().requires_grad_()
        loss, _ = score_loss(local, ref[rows], mask[rows], adv[rows], COEFS, "k3", normalizer, aggregation)
        loss.backward()
        grads.append(local.grad)
    # DDP: every process ends with the mean of the process gradients, here per row block.
    torch.testing.assert_close(torch.cat(grads) / world, full_logp.grad)


def test_loss_units():
    assert loss_units(MASK, "token_mean").item() == 7
    assert loss_units(MASK, "seq_mean").item() == 2


def test_end_to_end_gradient_through_logits():
    # token_logprobs -> score_loss -> backward agrees with an all-float64 reference.
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 6, 10, generator=g)
    ids = torch.randint(0, 10, (2, 6), generator=g)
    ref = torch.randn(2, 6, 10, generator=g)
    ref_logp = token_logprobs(ref, ids)
    x = logits.clone().requires_grad_()
    loss, _ = score_loss(token_logprobs(x, ids, chunk_size=5), ref_logp, MASK, ADV, COEFS, "k3", 7.0)
    loss.backward()
    y = logits.double().requires_grad_()
    expected, _ = score_loss(reference_logprobs(y, ids), ref_logp.double(), MASK, ADV.double(), COEFS, "k3", 7.0)
    expected.backward()
    torch.testing.assert_close(loss.double(), expected.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(x.grad.double(), y.grad, atol=1e-6, rtol=1e-5)


# --- temperature: tokens scored under the distribution that sampled them ------------------------


@pytest.mark.parametrize("temperature", [0.5, 0.7, 1.3])
def test_token_logprobs_under_temperature(temperature):
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 5, 7, dtype=torch.float64, generator=g, requires_grad=True)
    ids = torch.randint(0, 7, (2, 5), generator=g)
    out = token_logprobs(logits, ids, chunk_size=3, temperature=temperature)
    torch.testing.assert_close(out, reference_logprobs(logits / temperature, ids))
    torch.autograd.gradcheck(lambda x: token_logprobs(x, ids, chunk_size=4, temperature=temperature), (logits,))
    entropy = token_logprobs_and_entropy(logits.detach(), ids, chunk_size=3, temperature=temperature)[1]
    p = torch.log_softmax(logits.detach() / temperature, -1)
    torch.testing.assert_close(entropy[:, 1:], -(p.exp() * p).sum(-1)[:, :-1])
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(logits, ids, temperature=0.0)


def test_temperature_one_leaves_float32_logits_untouched():
    logits = torch.randn(1, 4, 5)
    before = logits.clone()
    token_logprobs(logits, torch.zeros(1, 4, dtype=torch.long), temperature=0.5)
    assert torch.equal(logits, before)


# --- exact enumeration on a toy policy ----------------------------------------------------------


@dataclass
class Toy:
    """Every conversation of a toy policy: rows are sequences, column 0 a prompt token, then the attempts."""

    tokens: torch.Tensor  # [S, L] every sequence of L tokens (attempt 1 then attempt 2 ...)
    attempt_mask: torch.Tensor  # [S, 1 + L]
    logp: torch.Tensor  # [S, 1 + L] log pi of each token given all earlier ones (0 at column 0), differentiable
    prob: torch.Tensor  # [S] pi(sequence), differentiable
    prefix_attempt: torch.Tensor  # [P] the attempt whose next token row p of the logits table predicts


def enumerate_toy(table: torch.Tensor, vocab: int, lengths: tuple[int, ...]) -> Toy:
    """A tabular autoregressive policy: table[p] holds the logits of the next token after the p-th prefix
    (every prefix of every length, in order of length), so pi(token | whole conversation so far) is free.
    Enumerates all vocab ** sum(lengths) sequences with their exact log-probabilities."""
    total = sum(lengths)
    prefixes = [q for n in range(total) for q in itertools.product(range(vocab), repeat=n)]
    assert table.shape == (len(prefixes), vocab)
    index = {q: i for i, q in enumerate(prefixes)}
    turn = [k + 1 for k, n in enumerate(lengths) for _ in range(n)]
    table_logp = torch.log_softmax(table, -1)
    sequences = list(itertools.product(range(vocab), repeat=total))
    logp = torch.stack(
        [
            torch.stack([table_logp.new_zeros(())] + [table_logp[index[seq[:t]], seq[t]] for t in range(total)])
            for seq in sequences
        ]
    )
    return Toy(
        tokens=torch.tensor(sequences),
        attempt_mask=torch.tensor([0] + turn).expand(len(sequences), -1),
        logp=logp,
        prob=logp.sum(1).exp(),
        prefix_attempt=torch.tensor([turn[len(q)] for q in prefixes]),
    )


def toy_table(vocab: int, lengths: tuple[int, ...], seed: int) -> torch.Tensor:
    n = sum(vocab**i for i in range(sum(lengths)))
    return torch.randn(n, vocab, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def expected_gradient(table: torch.Tensor, toy: Toy, row_loss) -> torch.Tensor:
    """E over sequences of grad(row_loss(i)) = sum_i pi(i) * grad row_loss(i), exactly."""
    total = sum(toy.prob[i].detach() * row_loss(i) for i in range(len(toy.prob)))
    return torch.autograd.grad(total, table, retain_graph=True)[0]


def exact_gradient(table: torch.Tensor, toy: Toy, values: torch.Tensor, attempt: int | None = None) -> torch.Tensor:
    """grad of E[values] = sum_i pi(i) * values[i]; with `attempt`, only through that attempt's rows of the table
    (the gradient w.r.t. the parameters that choose attempt k's tokens)."""
    (grad,) = torch.autograd.grad((toy.prob * values).sum(), table, retain_graph=True)
    if attempt is not None:
        grad = grad * (toy.prefix_attempt == attempt)[:, None]
    return grad


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("estimator", ["k1", "k3"])
@pytest.mark.parametrize("vocab,length", [(3, 3), (2, 5)])
def test_kl_modes_against_the_exact_gradient_of_the_attempt_kl(estimator, vocab, length):
    beta = 0.1
    table = toy_table(vocab, (length,), seed=length).requires_grad_()
    ref = enumerate_toy(toy_table(vocab, (length,), seed=10 + length), vocab, (length,))
    toy = enumerate_toy(table, vocab, (length,))
    # KL(pi(.|x) || pi_ref(.|x)) over whole attempts, and its gradient.
    kl = (toy.logp.sum(1) - ref.logp.sum(1)).detach()
    true_grad = exact_gradient(table, toy, toy.logp.sum(1) - ref.logp.sum(1))
    assert (toy.prob.sum() - 1).abs() < 1e-12 and kl @ toy.prob.detach() > 0

    def loss(mode):
        zero = torch.zeros(1, 1, dtype=torch.float64)
        return lambda i: score_loss(
            toy.logp[i : i + 1], ref.logp[i : i + 1], toy.attempt_mask[i : i + 1], zero, (beta,), estimator, 1.0,
            kl_mode=mode,
        )[0]  # fmt: skip

    reward_mode = expected_gradient(table, toy, loss("reward"))
    torch.testing.assert_close(reward_mode, beta * true_grad, atol=1e-12, rtol=1e-9)  # exact
    loss_mode = expected_gradient(table, toy, loss("loss"))
    # The per-token penalty holds each prefix fixed: its expected gradient misses how earlier tokens change the
    # KL of later positions, a known bias (here several percent).
    assert relative_error(loss_mode, beta * true_grad) > 0.02
    # It is exact for the last position's parameters: no later position's KL depends on that token.
    last = torch.arange(len(table)) >= len(table) - vocab ** (length - 1)
    torch.testing.assert_close(loss_mode[last], beta * true_grad[last], atol=1e-12, rtol=1e-9)
    assert relative_error(loss_mode[~last], beta * true_grad[~last]) > 0.02


def test_kl_rewards_to_go_by_hand():
    # Attempt 1 = positions 1-2, attempt 2 = positions 4-5; k1 per token = 1, 2 | 3, 4. No crossing of attempts.
    mask = torch.tensor([[0, 1, 1, 0, 2, 2, 0]])
    logp = torch.tensor([[9.0, 1.0, 2.0, 9.0, 3.0, 4.0, 9.0]])
    ref = torch.zeros(1, 7)
    out = kl_rewards_to_go(logp, ref, mask, (0.5, 0.1))
    torch.testing.assert_close(out, torch.tensor([[0.0, -1.5, -1.0, 0.0, -0.7, -0.4, 0.0]]))


def two_attempt_rewards(toy: Toy, length: int) -> torch.Tensor:
    """r_k = 1 when attempt k's last token is 0 ("the right answer"), [S, 2]."""
    return torch.stack([toy.tokens[:, length - 1] == 0, toy.tokens[:, 2 * length - 1] == 0], 1).double()


def stage2_expected_gradient(table, toy, rewards, alpha, gamma, advantages=None):
    adv = attempt_advantages(rewards, stage=2, alpha=alpha, baseline="none", group_size=1, gamma=gamma)
    adv = adv if advantages is None else advantages
    return expected_gradient(
        table,
        toy,
        lambda i: score_loss(
            toy.logp[i : i + 1], toy.logp[i : i + 1].detach(), toy.attempt_mask[i : i + 1], adv[i : i + 1],
            (0.0, 0.0), "k1", 1.0,
        )[0],
    )  # fmt: skip


@pytest.mark.parametrize("alpha,gamma", [(0.0, 0.0), (10.0, 0.0), (10.0, 1.0), (3.0, 0.5)])
def test_stage2_gradient_is_the_exact_per_attempt_gradient(alpha, gamma):
    # E[grad loss] = -(grad through attempt 1 of E[r1 + gamma * s] + grad through attempt 2 of E[s]).
    length = 2
    table = toy_table(2, (length, length), seed=3).requires_grad_()
    toy = enumerate_toy(table, 2, (length, length))
    r = two_attempt_rewards(toy, length)
    s = shaped_reward(r[:, 0], r[:, 1], alpha)
    exact = exact_gradient(table, toy, r[:, 0] + gamma * s, attempt=1)
    exact = exact + exact_gradient(table, toy, s, attempt=2)
    got = stage2_expected_gradient(table, toy, r, alpha, gamma)
    torch.testing.assert_close(got, -exact, atol=1e-12, rtol=1e-9)


def test_gamma0_shaping_is_weighting_r2_by_one_plus_alpha():
    # With gamma = 0 the -alpha * r1 part of the shaped reward depends only on attempt 1: for attempt 2 it is a
    # baseline. In expectation shaping = weighting r2 by (1 + alpha), and attempt 1 only sees r1.
    length, alpha = 2, 10.0
    table = toy_table(2, (length, length), seed=4).requires_grad_()
    toy = enumerate_toy(table, 2, (length, length))
    r = two_attempt_rewards(toy, length)
    shaped = stage2_expected_gradient(table, toy, r, alpha, gamma=0.0)
    weighted = torch.stack([r[:, 0], (1 + alpha) * r[:, 1]], 1)
    torch.testing.assert_close(stage2_expected_gradient(table, toy, r, alpha, 0.0, advantages=weighted), shaped)
    unshaped = stage2_expected_gradient(table, toy, r, 0.0, gamma=0.0)
    attempt1 = toy.prefix_attempt == 1
    torch.testing.assert_close(shaped[attempt1], unshaped[attempt1])  # alpha does not touch attempt 1
    assert not torch.allclose(shaped, unshaped)


def test_gamma1_alpha10_rewards_a_wrong_first_attempt():
    # gamma = 1, alpha = 10: attempt 1's return is r1 + s = 11 r2 - 9 r1. When attempt 2's success does not depend
    # on attempt 1, a gradient step makes the first attempt less often right; with gamma = 0 (or alpha = 0) more.
    length = 2
    vocab, lengths = 2, (length, length)
    table = toy_table(vocab, lengths, seed=5)
    prefixes = [q for n in range(2 * length) for q in itertools.product(range(vocab), repeat=n)]
    for i, q in enumerate(prefixes):  # attempt 2's logits depend only on attempt 2's own earlier tokens
        if len(q) >= length:
            table[i] = table[prefixes.index(q[length:])] + 0.3
    table.requires_grad_()
    toy = enumerate_toy(table, vocab, lengths)
    r = two_attempt_rewards(toy, length)
    grad_right_first = exact_gradient(table, toy, r[:, 0])

    def change_of_right_first(alpha, gamma):
        step = -stage2_expected_gradient(table, toy, r, alpha, gamma)
        return (step * grad_right_first).sum().item()  # d P(right at t1) along a gradient step

    assert change_of_right_first(alpha=10.0, gamma=1.0) < 0
    assert change_of_right_first(alpha=10.0, gamma=0.0) > 0
    assert change_of_right_first(alpha=0.0, gamma=1.0) > 0
    # Exactly: the attempt-1 step is -9 x the gradient of P(right at t1) (E[r2 | y1] is the same for every y1).
    step = -stage2_expected_gradient(table, toy, r, 10.0, 1.0)
    attempt1 = toy.prefix_attempt == 1
    torch.testing.assert_close(step[attempt1], -9 * grad_right_first[attempt1], atol=1e-12, rtol=1e-9)


# --- baselines over every process's rows ----------------------------------------------------------


@pytest.mark.parametrize("baseline", ["batch", "loo", "none"])
def test_process_advantages_use_every_process_rows(baseline):
    g = torch.Generator().manual_seed(7)
    rewards = (torch.rand(8, 2, generator=g) > 0.5).float()
    rewards[:4, 1] = 1.0  # process 0 does better than process 1: a per-process batch mean would differ
    rewards[4:, 1] = 0.0
    full = attempt_advantages(rewards, stage=2, alpha=10.0, baseline=baseline, group_size=2, gamma=0.5)
    world, shards = 2, rewards.chunk(2)

    def gather(local):  # what accelerator.gather returns on every process: all rows in rank order
        assert any(local is shard for shard in shards)
        return torch.cat(shards)

    local = [process_advantages(shards[r], gather, r, 2, 10.0, baseline, 2, gamma=0.5) for r in range(world)]
    torch.testing.assert_close(torch.cat(local), full)
    if baseline == "batch":
        alone = attempt_advantages(shards[0], stage=2, alpha=10.0, baseline="batch", group_size=2, gamma=0.5)
        assert not torch.allclose(alone, local[0])


# --- truncated importance sampling (sampler drift) ------------------------------------------------


def test_truncated_importance_weights_by_hand():
    logp = torch.log(torch.tensor([[0.5, 0.2, 0.3]])).requires_grad_()
    sampler = torch.log(torch.tensor([[0.25, 0.4, 0.3]]))
    weights = truncated_importance_weights(logp, sampler, cap=1.5)
    # ratios 0.5 / 0.25 = 2 (capped at 1.5), 0.2 / 0.4 = 0.5, 0.3 / 0.3 = 1
    torch.testing.assert_close(weights, torch.tensor([[1.5, 0.5, 1.0]]))
    assert not weights.requires_grad


def test_loss_gradient_with_importance_weights_by_hand():
    logp = LOGP.clone().requires_grad_()
    weights = torch.tensor([[9.0, 2.0, 0.5, 9.0, 1.0, 3.0], [9.0, 9.0, 0.0, 2.0, 1.0, 9.0]])
    loss, _ = score_loss(logp, REF, MASK, ADV, COEFS, "k1", normalizer=7.0, pg_weights=weights)
    loss.backward()
    # -w * A / normalizer on attempt tokens plus the unweighted beta_k * (logp - ref) / normalizer
    expected = torch.tensor([[0.0, -2.0 + 0.05, -0.5 - 0.1, 0.0, -2.0, -6.0 + 0.01], [0.0, 0.0, 0.1, -1.01, -0.5, 0.0]])
    torch.testing.assert_close(logp.grad, expected / 7)


def test_sampler_drift_by_hand():
    mask = torch.tensor([[0, 1, 1, 0, 2], [0, 0, 2, 2, 0]])
    logp = torch.tensor([[-9.0, -1.0, -2.0, -9.0, -0.5], [-9.0, -9.0, -1.0, -3.0, -9.0]])
    sampler = torch.tensor([[0.0, -1.5, -2.0, 0.0, -0.25], [0.0, 0.0, -1.125, -2.0, 0.0]])
    drift = add_sampler_drift(torch.zeros(3, dtype=torch.float64), logp, sampler, mask)
    # |differences| on attempt tokens: 0.5, 0, 0.25 | 0.125, 1 -> sum 1.875 over 5 tokens, max 1
    torch.testing.assert_close(drift, torch.tensor([1.875, 5.0, 1.0], dtype=torch.float64))
    drift = add_sampler_drift(drift, logp[:1], sampler[:1], mask[:1])
    torch.testing.assert_close(drift, torch.tensor([2.625, 8.0, 1.0], dtype=torch.float64))


def test_logprobs_and_entropy_from_one_pass_equal_the_separate_ones():
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(2, 6, 13, dtype=torch.float64, generator=g, requires_grad=True)
    ids = torch.randint(0, 13, (2, 6), generator=g)
    weights = torch.randn(2, 6, dtype=torch.float64, generator=g)
    logp, entropy = token_logprobs_and_entropy(logits, ids, chunk_size=5, temperature=0.7)
    assert not entropy.requires_grad
    torch.testing.assert_close(logp, token_logprobs(logits, ids, chunk_size=5, temperature=0.7))
    p = torch.log_softmax(logits.detach() / 0.7, -1)
    torch.testing.assert_close(entropy[:, 1:], -(p.exp() * p).sum(-1)[:, :-1])
    (grad,) = torch.autograd.grad((logp * weights).sum(), logits)
    (expected,) = torch.autograd.grad((reference_logprobs(logits / 0.7, ids) * weights).sum(), logits)
    torch.testing.assert_close(grad, expected)
