"""PPO maths as free functions: GAE, the clipped losses and the per-clip techniques.

Every function takes plain tensors, so a test needs three tensors, not a trainer.
Rollout tensors are time-major, shape (T, N); minibatch tensors are flat, shape (B,).
Design note §4 (per-clip advantage normalisation, GradNorm-like loss weights), §7 (KL
anchoring to clip experts) and §8 (entropy floor) live here; the training loop in
``learner.train`` composes them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

LOG_2PI_E = math.log(2.0 * math.pi * math.e)


def gae(
    rewards: Tensor,
    values: Tensor,
    dones: Tensor,
    next_values: Tensor,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over a (T, N) rollout; returns (advantages, returns).

    ``next_values[t]`` is the value of the state after step t *within the same episode*:
    V(s_{t+1}) while the episode continues, V(final_obs) when it was truncated (time limit:
    bootstrap), and 0 when it terminated (fall). ``dones[t]`` is 1 where the episode ended
    at step t (terminated or truncated) and cuts the recursion:

        delta_t = r_t + gamma * next_values_t - V(s_t)
        A_t     = delta_t + gamma * lam * (1 - dones_t) * A_{t+1},   A_T = 0
        R_t     = A_t + V(s_t)
    """
    deltas = rewards + gamma * next_values - values
    carry = (1.0 - dones.to(rewards.dtype)) * (gamma * lam)
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = deltas[t] + carry[t] * running
        advantages[t] = running
    return advantages, advantages + values


def clipped_policy_loss(
    new_log_prob: Tensor, old_log_prob: Tensor, advantages: Tensor, clip_coef: float
) -> Tensor:
    """Per-sample PPO clipped surrogate loss (to minimise), shape (B,).

    rho = exp(log pi(a|s) - log pi_old(a|s));
    L = max(-A * rho, -A * clip(rho, 1 - eps, 1 + eps)).
    """
    ratio = torch.exp(new_log_prob - old_log_prob)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef)
    return torch.maximum(unclipped, clipped)


def value_loss(
    values: Tensor,
    returns: Tensor,
    old_values: Tensor | None = None,
    clip_coef: float | None = None,
) -> Tensor:
    """Per-sample value loss, shape (B,): 0.5 (V - R)^2, or its clipped PPO variant.

    Clipped: V_c = V_old + clip(V - V_old, -eps, eps); L = 0.5 max((V - R)^2, (V_c - R)^2).
    """
    unclipped = (values - returns) ** 2
    if old_values is None or clip_coef is None:
        return 0.5 * unclipped
    clipped_values = old_values + torch.clamp(values - old_values, -clip_coef, clip_coef)
    return 0.5 * torch.maximum(unclipped, (clipped_values - returns) ** 2)


def per_clip_mean(values: Tensor, clip_ids: Tensor, num_clips: int) -> tuple[Tensor, Tensor]:
    """Mean of ``values`` per clip and the sample count per clip, both (K,); empty clips get 0.

    mean_i = sum_{b: c_b = i} x_b / max(n_i, 1).
    """
    counts = torch.zeros(num_clips, dtype=values.dtype, device=values.device)
    counts.index_add_(0, clip_ids, torch.ones_like(values))
    sums = torch.zeros(num_clips, dtype=values.dtype, device=values.device)
    sums = sums.index_add(0, clip_ids, values)
    return sums / counts.clamp(min=1.0), counts


def per_clip_normalize_advantages(
    adv: Tensor, clip_ids: Tensor, num_clips: int, eps: float = 1e-8
) -> Tensor:
    """Normalise advantages within each clip (§4), not over the whole batch.

    A~_b = (A_b - mu_{c_b}) / (sigma_{c_b} + eps), with mu_i, sigma_i the mean and
    (population) standard deviation of the advantages of the samples of clip i.
    """
    flat = adv.reshape(-1)
    ids = clip_ids.reshape(-1)
    mean, _ = per_clip_mean(flat, ids, num_clips)
    centred = flat - mean[ids]
    var, _ = per_clip_mean(centred**2, ids, num_clips)
    std = var.sqrt()
    return (centred / (std[ids] + eps)).reshape(adv.shape)


def normalize_advantages(adv: Tensor, eps: float = 1e-8) -> Tensor:
    """Global advantage normalisation: A~ = (A - mean(A)) / (std(A) + eps)."""
    return (adv - adv.mean()) / (adv.std(unbiased=False) + eps)


def gradnorm_weights(
    per_clip_grad_norms: Tensor,
    eps: float = 1e-8,
    present: Tensor | None = None,
    max_weight: float = 10.0,
) -> Tensor:
    """GradNorm-like per-clip loss weights (§4), shape (K,); absent clips get 0.

    alpha_i = g_bar / (g_i + eps) with g_bar the mean of g_i over the clips present in
    the minibatch, clamped to [1 / max_weight, max_weight], then rescaled so that the
    present weights average 1: the total L = (1/K') sum_i alpha_i L_i has per-clip
    gradient norms alpha_i g_i that even out.
    """
    norms = per_clip_grad_norms.detach()
    mask = torch.isfinite(norms) if present is None else present.bool() & torch.isfinite(norms)
    if not bool(mask.any()):
        return torch.zeros_like(norms)
    safe = torch.where(mask, norms, torch.zeros_like(norms))
    g_bar = safe[mask].mean()
    alpha = (g_bar / (safe + eps)).clamp(1.0 / max_weight, max_weight)
    alpha = torch.where(mask, alpha, torch.zeros_like(alpha))
    return alpha * (mask.sum() / alpha.sum())


def per_clip_grad_norms(clip_losses: Tensor, present: Tensor, parameters: list[Tensor]) -> Tensor:
    """g_i = || d L_i / d theta ||_2 over ``parameters`` for each present clip; NaN if absent.

    One backward pass per present clip, through the last shared layers only (GradNorm
    measures there), so the cost is a few small matrix products per clip.
    """
    return per_clip_grad_squares(clip_losses, present, parameters).sqrt()


def per_clip_grad_squares(clip_losses: Tensor, present: Tensor, parameters: list[Tensor]) -> Tensor:
    """g_i^2 = || d L_i / d theta ||_2^2 for each present clip; NaN if absent.

    Squares add over disjoint parameter sets: with L_i = A_i + C_i where A_i depends only
    on theta_A and C_i only on theta_C, g_i^2 over (theta_A, theta_C) is the sum of the
    two parts' squares, so the actor's and the critic's share can be measured apart.
    """
    squares = torch.full_like(clip_losses.detach(), float("nan"))
    for i in torch.nonzero(present, as_tuple=False).flatten().tolist():
        grads = torch.autograd.grad(
            clip_losses[i], parameters, retain_graph=True, allow_unused=True
        )
        per_tensor = [g.pow(2).sum() for g in grads if g is not None]
        squares[i] = torch.stack(per_tensor).sum() if per_tensor else 0.0
    return squares


def gaussian_kl(mean_p: Tensor, log_std_p: Tensor, mean_q: Tensor, log_std_q: Tensor) -> Tensor:
    """KL(p || q) of diagonal Gaussians, summed over the last (action) axis.

    KL = sum_a [ log s_q - log s_p + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) - 1/2 ].
    """
    var_p = torch.exp(2.0 * log_std_p)
    var_q = torch.exp(2.0 * log_std_q)
    kl = log_std_q - log_std_p + (var_p + (mean_p - mean_q) ** 2) / (2.0 * var_q) - 0.5
    return kl.sum(dim=-1)


def kl_to_experts(
    expert_mean: Tensor,
    expert_log_std: Tensor,
    mean: Tensor,
    log_std: Tensor,
    has_expert: Tensor | None = None,
) -> Tensor:
    """Per-sample KL(pi_i(.|s) || pi(.|s, i)) to the active clip's expert (§7), shape (B,).

    The loss adds beta * E_{i~p, s~pi}[KL]; samples whose clip has no expert
    (``has_expert`` false) contribute 0.
    """
    kl = gaussian_kl(
        expert_mean, expert_log_std.expand_as(expert_mean), mean, log_std.expand_as(mean)
    )
    if has_expert is None:
        return kl
    return torch.where(has_expert.bool(), kl, torch.zeros_like(kl))


def gaussian_entropy_per_dim(log_std: Tensor) -> Tensor:
    """Entropy of a diagonal Gaussian per action dimension: mean_a(log s_a) + 0.5 log(2 pi e)."""
    return log_std.mean(dim=-1) + 0.5 * LOG_2PI_E


def entropy_floor_penalty(entropy: Tensor, h_min: float, coef: float) -> Tensor:
    """Hinge penalty keeping the policy entropy above a floor (§8): coef * max(0, h_min - H).

    A penalty, not an adaptive coefficient: it is zero (and has no gradient) while
    H >= h_min and pushes H up with a constant slope ``coef`` below the floor.
    ``entropy`` is the mean entropy per action dimension, so h_min does not depend on the
    character's action count.
    """
    return coef * torch.relu(h_min - entropy.mean())


def adaptive_learning_rate(
    learning_rate: float,
    approx_kl: float,
    desired_kl: float,
    factor: float = 1.5,
    bounds: tuple[float, float] = (1e-6, 1e-2),
) -> float:
    """KL-adaptive step size (as rsl_rl's ``schedule="adaptive"``): divide by ``factor``
    when KL(pi_old || pi) > 2 desired, multiply when < desired / 2, else keep; within bounds.

    With a small fixed exploration std (tracking: sigma = 0.05) a fixed Adam step moves
    the mean by many sigmas per epoch; this keeps each update's KL near ``desired_kl``.
    """
    if not np.isfinite(approx_kl):
        return learning_rate
    if approx_kl > 2.0 * desired_kl:
        learning_rate /= factor
    elif approx_kl < 0.5 * desired_kl:
        learning_rate *= factor
    return float(min(max(learning_rate, bounds[0]), bounds[1]))
