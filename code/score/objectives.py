"""The SCoRe objective as pure tensor functions (in the spirit of verl's core_algos.py).

Conventions. A rollout batch holds one sequence per conversation (x, y1, p, y2):
`input_ids`, `attention_mask`, `attempt_mask` are [N, T] and `attempt_mask` is 0 on prompt,
instruction and pad tokens and k on tokens generated in attempt k (1-based). `rewards` is [N, K].
The samples of one problem are `group_size` contiguous rows. Per-token tensors are aligned so
that position t scores token t: `logp[:, t] = log pi(input_ids[:, t] | input_ids[:, :t])`.

The loss is REINFORCE with per-attempt credit by default (gamma = 0: no reward flows from attempt 2
to attempt 1) and a KL penalty to the frozen reference model, by default added to the loss per token
(kl_mode "loss"), or put into the return with reward-to-go inside each attempt (kl_mode "reward"):

    loss = sum over attempt tokens of  w_t * (-A_k * logp_t + beta_k * kl_t)  / normalizer     (loss)
    loss = sum over attempt tokens of  w_t * (-(A_k + c_t) * logp_t)  / normalizer              (reward)

One forward pass over the whole conversation gives every attempt's log-probs; `attempt_mask`
selects which advantage and KL coefficient each token gets. A typical step:

    adv = process_advantages(rollout.rewards, gather, rank, stage, alpha, baseline, group_size, gamma)
    coefs = kl_coefficients(stage, attempts, beta1, beta2)
    normalizer = global loss_units(...) / world_size                                  # see loss_units
    for each micro-batch:
        logp, entropy = token_logprobs_and_entropy(policy(ids).logits, ids, temperature=T)   # T: sampling temperature
        ref_logp = token_logprobs(reference(ids).logits, ids, temperature=T)         # under no_grad
        loss, stats = score_loss(logp, ref_logp, mask, adv[rows], coefs, estimator, normalizer, agg, kl_mode)
        loss.backward()
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from score.config import Config

KL_ESTIMATORS = ("k1", "k3")
KL_MODES = ("loss", "reward")
BASELINES = ("loo", "batch", "none")
AGGREGATIONS = ("token_mean", "seq_mean")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision logits, float64 stays float64 (so gradcheck works)."""
    return torch.promote_types(dtype, torch.float32)


class _ChunkedLogprobs(torch.autograd.Function):
    """log softmax(logits / temperature)[label] for rows of a [M, V] matrix, `chunk` rows at a time, and, when
    asked, the entropy of each row's distribution from the same pass (no gradient).

    Only the input logits (as given, e.g. bf16), the labels and one float per row are kept for the
    backward pass, which recomputes the softmax chunk by chunk. A plain
    `log_softmax(logits.float())` would keep a float32 copy of the whole [M, V] matrix alive until
    the backward pass: 2.5 GB for 4096 tokens of a 152k vocabulary. The entropy reuses the chunk and its
    logsumexp already at hand, so it costs one exp and one product per logit, not a second pass over the logits.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, chunk: int, temperature: float, with_entropy: bool):
        dtype = _compute_dtype(logits.dtype)
        out = torch.empty(logits.shape[0], dtype=dtype, device=logits.device)
        lse = torch.empty_like(out)
        entropy = torch.empty_like(out) if with_entropy else out.new_zeros(0)
        for s in range(0, logits.shape[0], chunk):
            block = _tempered(logits[s : s + chunk].to(dtype), temperature)
            lse[s : s + chunk] = block.logsumexp(-1)
            out[s : s + chunk] = block.gather(-1, labels[s : s + chunk, None]).squeeze(-1) - lse[s : s + chunk]
            if with_entropy:  # H = lse - sum p * logit
                p = (block - lse[s : s + chunk, None]).exp_()
                entropy[s : s + chunk] = lse[s : s + chunk] - p.mul_(block).sum(-1)
        ctx.save_for_backward(logits, labels, lse)
        ctx.chunk, ctx.temperature = chunk, temperature
        ctx.mark_non_differentiable(entropy)
        return out, entropy

    @staticmethod
    def backward(ctx, grad_out: Tensor, grad_entropy: Tensor):
        logits, labels, lse = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        grad = torch.empty_like(logits)
        for s in range(0, logits.shape[0], ctx.chunk):
            g = grad_out[s : s + ctx.chunk, None].to(lse.dtype) / ctx.temperature
            # d log p(label) / d logit_j = (1[j = label] - softmax_j(logits / T)) / T
            block = _tempered(logits[s : s + ctx.chunk].to(lse.dtype), ctx.temperature)
            block = (block - lse[s : s + ctx.chunk, None]).exp_().mul_(-g)
            block.scatter_add_(-1, labels[s : s + ctx.chunk, None], g)
            grad[s : s + ctx.chunk] = block
        return grad, None, None, None, None


def _tempered(block: Tensor, temperature: float) -> Tensor:
    """logits / T (never in place: the block may be the caller's tensor); T = 1 leaves the values bit for bit."""
    return block if temperature == 1.0 else block / temperature


def token_logprobs_and_entropy(
    logits: Tensor, input_ids: Tensor, chunk_size: int = 1024, temperature: float = 1.0, with_entropy: bool = True
) -> tuple[Tensor, Tensor | None]:
    """`token_logprobs` and the entropy of each predicting distribution (aligned the same way, no gradient) from one
    chunked pass over the logits; entropy None unless asked."""
    n, t, v = logits.shape
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    # Position t's logits predict token t + 1; the last position predicts nothing and gets a
    # dummy label whose score is dropped below.
    labels = torch.cat([input_ids[:, 1:], input_ids[:, :1]], dim=1).reshape(-1)
    scores, entropy = _ChunkedLogprobs.apply(
        logits.reshape(n * t, v), labels, chunk_size, float(temperature), with_entropy
    )

    def aligned(per_row: Tensor) -> Tensor:  # out[:, t] from logits[:, t - 1]; out[:, 0] = 0
        per_row = per_row.view(n, t)
        return torch.cat([per_row.new_zeros(n, 1), per_row[:, :-1]], dim=1)

    return aligned(scores), aligned(entropy) if with_entropy else None


def token_logprobs(logits: Tensor, input_ids: Tensor, chunk_size: int = 1024, temperature: float = 1.0) -> Tensor:
    """Log-probability of each token under the model: [N, T, V], [N, T] -> [N, T] (float32 or wider).

    out[:, t] = log p(input_ids[:, t] | input_ids[:, :t]), computed from logits[:, t - 1] / temperature;
    out[:, 0] = 0 (the first token has no prediction; it is always prompt). Pass the sampling temperature so
    that tokens are scored under the distribution that sampled them (on-policy). The log-softmax runs in float32
    (or wider) whatever the dtype of the logits.

    Works on `chunk_size` token positions at a time, so the extra memory is a few float32
    [chunk_size, V] blocks, never a float32 copy of the batch, in the forward and backward passes.
    Contiguous logits (as models return them) are not copied. Differentiable w.r.t. `logits`.
    """
    return token_logprobs_and_entropy(logits, input_ids, chunk_size, temperature, with_entropy=False)[0]


def kl_per_token(logp: Tensor, ref_logp: Tensor, estimator: str) -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from log-probs of tokens sampled from pi.

    Value (Schulman, "Approximating KL divergence", 2020), with d = ref_logp - logp:
      k1 = logp - ref_logp                (unbiased, can be negative)
      k3 = exp(d) - d - 1                 (unbiased, non-negative, lower variance; d clamped to
                                           [-20, 20] so exp cannot overflow)

    Gradient: the returned tensor is added to the loss as a differentiable penalty on the policy
    log-probs (as the KL loss of GRPO / verl), but with a straight-through gradient: the value is
    k1 or k3, the gradient w.r.t. `logp` is that of k2 = (logp - ref_logp)^2 / 2, i.e.
    (logp - ref_logp) * grad(logp). On tokens sampled from pi its expectation is the gradient of
    the per-token KL(pi(.|prefix) || pi_ref(.|prefix)), which is what the objective asks for.
    Differentiating k1 or k3 directly would be wrong: grad k1 = grad(logp) has expectation zero
    (no regularisation at all), and grad k3 has the expectation of grad KL(pi_ref || pi), the
    other direction. This is verl's "k1+" / "k3+". The estimator therefore changes the reported
    value (and loss value), not the gradient.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}")
    log_ratio = logp - ref_logp
    if estimator == "k1":
        value = log_ratio
    else:
        d = (-log_ratio).clamp(-20.0, 20.0)
        value = d.exp() - d - 1
    k2 = 0.5 * log_ratio.square()
    return k2 - k2.detach() + value.detach()


def leave_one_out_baseline(rewards: Tensor, group_size: int) -> Tensor:
    """Mean reward of the other samples of the same problem; rows come in contiguous groups.

    rewards [N, ...] -> [N, ...]. Unlike a group mean including the sample itself, this keeps the
    policy gradient unbiased.
    """
    n = rewards.shape[0]
    if group_size < 2 or n % group_size:
        raise ValueError(f"leave-one-out baseline needs groups of >= 2 samples dividing {n} rows, got {group_size}")
    groups = rewards.reshape(n // group_size, group_size, *rewards.shape[1:])
    return ((groups.sum(1, keepdim=True) - groups) / (group_size - 1)).reshape(rewards.shape)


def batch_mean_baseline(rewards: Tensor) -> Tensor:
    """Mean reward over all rows (the rollout batch given), the same for every row."""
    return rewards.mean(0, keepdim=True).expand_as(rewards).clone()


def compute_baseline(rewards: Tensor, kind: str, group_size: int) -> Tensor:
    """Baseline of `kind` ("loo", "batch" or "none") for rewards [N, ...]."""
    if kind == "loo":
        return leave_one_out_baseline(rewards, group_size)
    if kind == "batch":
        return batch_mean_baseline(rewards)
    if kind == "none":
        return torch.zeros_like(rewards)
    raise ValueError(f"unknown baseline {kind!r}; expected one of {BASELINES}")


def shaped_reward(r1: Tensor, r2: Tensor, alpha: float) -> Tensor:
    """Stage II reward of the second attempt: r2 + alpha * (r2 - r1) rewards fixing, punishes breaking."""
    return r2 + alpha * (r2 - r1)


def attempt_advantages(
    rewards: Tensor, stage: int, alpha: float, baseline: str, group_size: int, gamma: float = 0.0
) -> Tensor:
    """Advantage of each attempt, rewards [N, K] -> [N, K]; gamma is the discount from attempt 2 to attempt 1.

    K = 2, Stage I:  A1 = 0 (attempt 1 gets no policy gradient, only KL), A2 = r2 - b(r2).
    K = 2, Stage II: A1 = G1 - b(G1) with the return G1 = r1 + gamma * s, A2 = s - b(s) with
                     s = shaped_reward(r1, r2, alpha). gamma = 0 (default, per-attempt credit): A1 never
                     depends on r2, and the -alpha * r1 part of s depends only on attempt 1, so for attempt 2
                     it is a baseline: in expectation shaping weights r2 by (1 + alpha). gamma > 0: attempt 1
                     is paid gamma * s, so alpha changes its incentive (gamma = 1, alpha = 10: G1 = 11 r2 - 9 r1,
                     a wrong first attempt is rewarded).
    K = 1 (single-attempt RL, either stage): A1 = r1 - b(r1).
    The baseline b is computed per attempt on that attempt's return over the batch given,
    so compute advantages on a whole rollout batch (all samples of a problem), then split it.
    """
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    rewards = rewards.float()
    n_attempts = rewards.shape[1]
    if n_attempts == 1:
        return rewards - compute_baseline(rewards, baseline, group_size)
    if n_attempts != 2:
        raise ValueError(f"SCoRe uses 1 or 2 attempts, got rewards for {n_attempts}")
    r1, r2 = rewards.unbind(1)
    if stage == 1:
        a1 = torch.zeros_like(r1)
        a2 = r2 - compute_baseline(r2, baseline, group_size)
    else:
        s = shaped_reward(r1, r2, alpha)
        g1 = r1 + gamma * s
        a1 = g1 - compute_baseline(g1, baseline, group_size)
        a2 = s - compute_baseline(s, baseline, group_size)
    return torch.stack([a1, a2], dim=1)


def process_advantages(
    rewards: Tensor,
    gather: Callable[[Tensor], Tensor],
    rank: int,
    stage: int,
    alpha: float,
    baseline: str,
    group_size: int,
    gamma: float = 0.0,
) -> Tensor:
    """`attempt_advantages` of this process's rows [n, K], with baselines over every process's rows.

    gather(rewards) returns all processes' rewards stacked in rank order (accelerator.gather); every process has
    n rows and keeps rows rank * n ... (rank + 1) * n. The `batch` baseline is then the mean over the global
    batch, as with one process; `loo` is unchanged (a problem's samples are on one process).
    """
    n = rewards.shape[0]
    everything = gather(rewards)
    return attempt_advantages(everything, stage, alpha, baseline, group_size, gamma)[rank * n : (rank + 1) * n]


def kl_rewards_to_go(logp: Tensor, ref_logp: Tensor, attempt_mask: Tensor, kl_coefs: Sequence[float]) -> Tensor:
    """KL as a reward (kl_mode=reward): -beta_k * sum of k1 = logp - ref_logp over the rest of attempt k, [N, T].

    out[:, t] = -beta_k * sum_{t' >= t, t' in attempt k} (logp_t' - ref_logp_t') for a token t of attempt k, 0
    elsewhere; detached. Used as a per-token addition to the advantage, REINFORCE with this reward-to-go is
    exact in expectation: E[sum_t grad logp_t * sum_{t'>=t} k1_t'] = grad KL(pi(.|c) || pi_ref(.|c)) of the whole
    attempt given its context c (the terms t' < t have expectation 0). Each attempt is charged its own KL only.
    """
    log_ratio = (logp - ref_logp).detach()
    out = torch.zeros_like(log_ratio)
    for k, beta in enumerate(kl_coefs, 1):
        mask = attempt_mask == k
        ratio = torch.where(mask, log_ratio, 0.0)
        to_go = ratio.flip(1).cumsum(1).flip(1)
        out = out + torch.where(mask, -beta * to_go, 0.0)
    return out


def kl_coefficients(stage: int, attempts: int, beta1: float, beta2: float) -> tuple[float, ...]:
    """KL coefficient of each attempt: Stage I (beta2, beta1), Stage II (beta1, beta1), one attempt (beta1,)."""
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    if attempts == 1:
        return (beta1,)
    if attempts != 2:
        raise ValueError(f"SCoRe uses 1 or 2 attempts, got {attempts}")
    return (beta2, beta1) if stage == 1 else (beta1, beta1)


def loss_units(attempt_mask: Tensor, aggregation: str) -> Tensor:
    """What `score_loss` divides by, counted on one micro-batch: attempt tokens or sequences.

    The normalizer of an optimizer step is the sum of these over all its micro-batches and all
    processes. DDP averages gradients over processes, so pass `normalizer = global_units /
    world_size`; the averaged gradient is then exactly the gradient of the global-batch loss:

        units = sum(loss_units(mb.attempt_mask, agg) for mb in micro_batches)
        normalizer = accelerator.reduce(units, "sum") / accelerator.num_processes
    """
    if aggregation == "token_mean":
        return (attempt_mask > 0).sum().float()
    if aggregation == "seq_mean":
        return torch.tensor(float(attempt_mask.shape[0]), device=attempt_mask.device)
    raise ValueError(f"unknown loss aggregation {aggregation!r}; expected one of {AGGREGATIONS}")


def score_loss(
    logp: Tensor,
    ref_logp: Tensor,
    attempt_mask: Tensor,
    advantages: Tensor,
    kl_coefs: Sequence[float],
    estimator: str,
    normalizer: float | Tensor,
    aggregation: str = "token_mean",
    kl_mode: str = "loss",
    pg_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """REINFORCE + KL loss of one micro-batch; summed over micro-batches it is the global-batch loss.

    logp, ref_logp [N, T]: `token_logprobs` of the policy (with grad) and the reference.
    attempt_mask [N, T]; advantages [N, K] (constants, from `attempt_advantages`);
    kl_coefs: K floats (from `kl_coefficients`); estimator: "k1" or "k3" (see `kl_per_token`).

    Per token of attempt k, kl_mode "loss": term = -A_k * logp_t + beta_k * kl_t (a per-token penalty, see
    `kl_per_token`; its gradient is that of the per-position KLs with the prefix held fixed, a biased estimate of
    the gradient of the attempt's KL). kl_mode "reward": term = -(A_k + c_t) * logp_t with c from
    `kl_rewards_to_go` (exact in expectation); the estimator then only changes the reported KL.
    Prompt and pad tokens add nothing.
      token_mean: loss = sum of terms / normalizer, normalizer = attempt tokens of the global batch.
      seq_mean:   each attempt's mean term over its tokens, summed over the attempts of a sequence,
                  summed over sequences / normalizer, normalizer = sequences of the global batch.
    See `loss_units` for the normalizer under several processes.
    pg_weights [N, T] (optional, constants): multiply each token's REINFORCE term (in kl_mode "reward" its KL
    reward included), e.g. `truncated_importance_weights`; the KL penalty of kl_mode "loss" is not weighted.

    Returns (loss, stats) with detached stats that add up over micro-batches and processes:
    pg_loss and kl_loss (loss = pg_loss + kl_loss; kl_loss = 0 in reward mode, where the KL is in pg_loss),
    kl_sum [K] (sum of the KL estimate over attempt-k tokens) and tokens [K] (attempt-k token counts);
    mean KL of attempt k = kl_sum / tokens.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {aggregation!r}; expected one of {AGGREGATIONS}")
    if kl_mode not in KL_MODES:
        raise ValueError(f"unknown KL mode {kl_mode!r}; expected one of {KL_MODES}")
    n_attempts = advantages.shape[1]
    if len(kl_coefs) != n_attempts:
        raise ValueError(f"{len(kl_coefs)} KL coefficients for {n_attempts} attempts")
    if int(attempt_mask.max()) > n_attempts:
        raise ValueError(f"attempt_mask has attempt {int(attempt_mask.max())} but advantages only {n_attempts}")
    active = attempt_mask > 0
    # Prompt and pad positions may hold any value (even inf); zero them so they cannot reach the sums.
    logp, ref_logp = torch.where(active, logp, 0.0), torch.where(active, ref_logp, 0.0)
    kl = kl_per_token(logp, ref_logp, estimator)
    advantages = advantages.detach().to(logp.dtype)
    in_reward = kl_mode == "reward"
    kl_reward = kl_rewards_to_go(logp, ref_logp, attempt_mask, kl_coefs) if in_reward else torch.zeros_like(logp)
    pg_sum = kl_weighted = logp.new_zeros(())
    kl_sum, tokens = [], []
    for k in range(n_attempts):
        mask = (attempt_mask == k + 1).to(logp.dtype)
        count = mask.sum(1, keepdim=True)
        weight = mask if aggregation == "token_mean" else mask / count.clamp(min=1)
        pg_weight = weight if pg_weights is None else weight * pg_weights.detach().to(logp.dtype)
        pg_sum = pg_sum - (pg_weight * (advantages[:, k : k + 1] + kl_reward) * logp).sum()
        if not in_reward:
            kl_weighted = kl_weighted + kl_coefs[k] * (weight * kl).sum()
        kl_sum.append((mask * kl).sum().detach())
        tokens.append(count.sum())
    pg_loss, kl_loss = pg_sum / normalizer, kl_weighted / normalizer
    stats = {
        "pg_loss": pg_loss.detach(),
        "kl_loss": kl_loss.detach(),
        "kl_sum": torch.stack(kl_sum),
        "tokens": torch.stack(tokens),
    }
    return pg_loss + kl_loss, stats


def truncated_importance_weights(logp: Tensor, sampler_logp: Tensor, cap: float) -> Tensor:
    """min(pi_train / pi_sampler, cap) per token, detached: [N, T], [N, T] -> [N, T].

    The rollout engine (vLLM) samples with other kernels than the training forward pass, so its log-probs differ
    slightly: the attempts are samples of pi_sampler, not of pi_train. Weighting each token's policy-gradient term
    by the importance ratio corrects for that; truncating it at `cap` bounds the variance (truncated importance
    sampling, Yao et al., 2025, "Your efficient RL framework secretly brings you off-policy RL training").
    """
    return (logp.detach() - sampler_logp).exp().clamp(max=cap)


@torch.no_grad()
def add_sampler_drift(drift: Tensor, logp: Tensor, sampler_logp: Tensor, attempt_mask: Tensor) -> Tensor:
    """Accumulate |logp - sampler_logp| over attempt tokens into drift = [sum, tokens, max] (a new tensor)."""
    gap = (logp.detach() - sampler_logp).abs()[attempt_mask > 0].to(drift.dtype)
    if gap.numel() == 0:
        return drift
    return torch.stack([drift[0] + gap.sum(), drift[1] + gap.numel(), torch.maximum(drift[2], gap.max())])


def stage_schedule(cfg: Config) -> list[int]:
    """The stage (1 or 2) of every optimizer step: rounds of Stage I steps then Stage II steps."""
    t = cfg.train
    return ([1] * t.stage1_steps + [2] * t.stage2_steps) * t.rounds
