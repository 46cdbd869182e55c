"""PPO maths against hand-computed values, and the per-clip techniques on small tensors."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from learner import ppo


def test_gae_matches_hand_computed_values() -> None:
    # gamma = 0.9, lam = 0.8, one env, no episode end:
    # delta_0 = 1 + 0.9*1.0 - 0.5 = 1.40
    # delta_1 = 2 + 0.9*1.5 - 1.0 = 2.35
    # delta_2 = 3 + 0.9*2.0 - 1.5 = 3.30
    # A_2 = 3.30; A_1 = 2.35 + 0.72*3.30 = 4.726; A_0 = 1.40 + 0.72*4.726 = 4.80272
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [1.5]])
    next_values = torch.tensor([[1.0], [1.5], [2.0]])
    dones = torch.zeros(3, 1)
    adv, returns = ppo.gae(rewards, values, dones, next_values, gamma=0.9, lam=0.8)
    expected = torch.tensor([[4.80272], [4.726], [3.30]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(returns, expected + values)


def test_gae_episode_end_cuts_the_recursion() -> None:
    # The episode ends at t = 1, so A_1 = delta_1 = 2.35 and A_0 = 1.40 + 0.72 * 2.35 = 3.092;
    # A_2 belongs to the next episode: delta_2 = 3.30.
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [1.5]])
    next_values = torch.tensor([[1.0], [1.5], [2.0]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])
    adv, _ = ppo.gae(rewards, values, dones, next_values, gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, torch.tensor([[3.092], [2.35], [3.30]]))


def test_gae_truncation_bootstraps_from_the_final_value_and_termination_does_not() -> None:
    rewards = torch.ones(2, 1)
    values = torch.zeros(2, 1)
    dones = torch.tensor([[1.0], [0.0]])
    truncated_next = torch.tensor([[5.0], [0.0]])  # V(final_obs) = 5 at the truncated step
    terminated_next = torch.tensor([[0.0], [0.0]])  # a fall: nothing to bootstrap
    adv_trunc, _ = ppo.gae(rewards, values, dones, truncated_next, gamma=0.5, lam=1.0)
    adv_term, _ = ppo.gae(rewards, values, dones, terminated_next, gamma=0.5, lam=1.0)
    assert float(adv_trunc[0, 0]) == pytest.approx(1.0 + 0.5 * 5.0)
    assert float(adv_term[0, 0]) == pytest.approx(1.0)
    assert float(adv_trunc[1, 0]) == float(adv_term[1, 0])  # the next episode is unaffected


def test_gae_treats_envs_independently() -> None:
    gen = torch.Generator().manual_seed(0)
    rewards, values, next_values = (torch.randn(5, 3, generator=gen) for _ in range(3))
    dones = (torch.rand(5, 3, generator=gen) < 0.3).float()
    adv, _ = ppo.gae(rewards, values, dones, next_values, gamma=0.99, lam=0.95)
    for env in range(3):
        column, _ = ppo.gae(
            rewards[:, env : env + 1],
            values[:, env : env + 1],
            dones[:, env : env + 1],
            next_values[:, env : env + 1],
            gamma=0.99,
            lam=0.95,
        )
        torch.testing.assert_close(adv[:, env : env + 1], column)


def test_clipped_policy_loss_matches_hand_computed_values() -> None:
    # eps = 0.2.  rho = 1.5, A = +1: max(-1.5, -1.2) = -1.2 (clipped, no incentive past 1.2)
    #             rho = 0.5, A = -1: max(0.5, 0.8)   =  0.8 (clipped)
    #             rho = 1.1, A = +2: max(-2.2, -2.2) = -2.2 (inside the trust region)
    new = torch.log(torch.tensor([1.5, 0.5, 1.1]))
    old = torch.zeros(3)
    adv = torch.tensor([1.0, -1.0, 2.0])
    loss = ppo.clipped_policy_loss(new, old, adv, clip_coef=0.2)
    torch.testing.assert_close(loss, torch.tensor([-1.2, 0.8, -2.2]))


def test_clipped_policy_loss_has_no_gradient_once_clipped() -> None:
    new = torch.log(torch.tensor([1.5])).requires_grad_(True)
    ppo.clipped_policy_loss(new, torch.zeros(1), torch.ones(1), 0.2).sum().backward()
    assert new.grad is not None and float(new.grad[0]) == 0.0


def test_value_loss_plain_and_clipped() -> None:
    values = torch.tensor([2.0, 0.0])
    returns = torch.tensor([1.0, 1.0])
    torch.testing.assert_close(ppo.value_loss(values, returns), torch.tensor([0.5, 0.5]))
    # clipped around old values 1.5 and 0.5 with eps 0.2: V_c = 1.7 and 0.3;
    # L = 0.5 * max((V - R)^2, (V_c - R)^2) = 0.5 * max(1, 0.49) and 0.5 * max(1, 0.49)
    old = torch.tensor([1.5, 0.5])
    clipped = ppo.value_loss(values, returns, old, clip_coef=0.2)
    torch.testing.assert_close(clipped, torch.tensor([0.5, 0.5]))
    # moving towards the target beyond the clip range: V = 1.0 from V_old = 3.0, R = 1.0
    # -> V_c = 2.8, L = 0.5 * max(0, 1.8^2) = 1.62
    torch.testing.assert_close(
        ppo.value_loss(torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([3.0]), 0.2),
        torch.tensor([1.62]),
    )


def test_per_clip_mean_and_counts() -> None:
    values = torch.tensor([1.0, 3.0, 10.0, 5.0])
    clip_ids = torch.tensor([0, 0, 2, 2])
    mean, counts = ppo.per_clip_mean(values, clip_ids, num_clips=3)
    torch.testing.assert_close(mean, torch.tensor([2.0, 0.0, 7.5]))
    torch.testing.assert_close(counts, torch.tensor([2.0, 0.0, 2.0]))


def test_per_clip_advantage_normalisation_standardises_each_clip() -> None:
    gen = torch.Generator().manual_seed(1)
    clip_ids = torch.arange(3).repeat_interleave(50)
    scales = torch.tensor([0.1, 1.0, 100.0])[clip_ids]
    adv = torch.randn(150, generator=gen) * scales + 5.0 * clip_ids
    normed = ppo.per_clip_normalize_advantages(adv, clip_ids, num_clips=3)
    for clip in range(3):
        part = normed[clip_ids == clip]
        assert float(part.mean()) == pytest.approx(0.0, abs=1e-5)
        assert float(part.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    # global normalisation lets the large-scale clip dominate: the small clip nearly vanishes
    global_normed = ppo.normalize_advantages(adv)
    assert float(global_normed[clip_ids == 0].std()) < 0.01


def test_per_clip_advantage_normalisation_keeps_the_shape() -> None:
    adv = torch.randn(4, 3)
    clip_ids = torch.tensor([[0, 1, 1]] * 4)
    assert ppo.per_clip_normalize_advantages(adv, clip_ids, 2).shape == (4, 3)


def test_gradnorm_weights_even_out_the_weighted_gradient_norms() -> None:
    norms = torch.tensor([1.0, 4.0, 0.5, float("nan")])  # clip 3 absent from the minibatch
    alpha = ppo.gradnorm_weights(norms, eps=0.0)
    weighted = alpha[:3] * norms[:3]
    torch.testing.assert_close(weighted, torch.full((3,), float(weighted[0])))
    assert float(alpha[3]) == 0.0
    assert float(alpha[:3].mean()) == pytest.approx(1.0)
    assert float(alpha[2]) > float(alpha[0]) > float(alpha[1])  # small gradient -> big weight


def test_gradnorm_weights_are_clamped_and_respect_the_present_mask() -> None:
    norms = torch.tensor([1e-9, 1.0, 1.0])
    alpha = ppo.gradnorm_weights(norms, eps=1e-8, max_weight=10.0)
    assert float(alpha.max() / alpha.min()) <= 100.0 + 1e-6
    masked = ppo.gradnorm_weights(torch.ones(3), present=torch.tensor([True, False, True]))
    torch.testing.assert_close(masked, torch.tensor([1.0, 0.0, 1.0]))
    assert float(ppo.gradnorm_weights(torch.full((2,), float("nan"))).sum()) == 0.0


def test_per_clip_grad_norms_match_a_manual_gradient() -> None:
    # L_i = mean over clip-i samples of (w . x); dL_i/dw = mean of x over clip i
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    clip_ids = torch.tensor([0, 0, 2])
    losses, counts = ppo.per_clip_mean(x @ w, clip_ids, num_clips=3)
    norms = ppo.per_clip_grad_norms(losses, counts > 0, [w])
    assert float(norms[0]) == pytest.approx(math.hypot(2.0, 2.0))  # mean x = (2, 2)
    assert math.isnan(float(norms[1]))
    assert float(norms[2]) == pytest.approx(2.0)


def test_kl_to_experts_hand_value_mask_and_gradient() -> None:
    # KL(N(1, 1) || N(0, 1)) = (1 - 0)^2 / 2 = 0.5 per dimension
    expert_mean = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    mean = torch.zeros(2, 2, requires_grad=True)
    log_std = torch.zeros(2)
    kl = ppo.kl_to_experts(expert_mean, torch.zeros(2), mean, log_std, torch.tensor([True, False]))
    torch.testing.assert_close(kl.detach(), torch.tensor([1.0, 0.0]))
    kl.sum().backward()
    assert mean.grad is not None
    assert bool((mean.grad[0] < 0).all())  # descending the KL moves the mean toward the expert
    assert bool((mean.grad[1] == 0).all())  # no expert, no pull
    same = ppo.kl_to_experts(expert_mean, torch.zeros(2), expert_mean, torch.zeros(2))
    torch.testing.assert_close(same, torch.zeros(2))


def test_gaussian_kl_matches_torch_distributions() -> None:
    gen = torch.Generator().manual_seed(2)
    m_p, m_q, s_p, s_q = (torch.randn(4, 3, generator=gen) for _ in range(4))
    p = torch.distributions.Normal(m_p, s_p.exp())
    q = torch.distributions.Normal(m_q, s_q.exp())
    expected = torch.distributions.kl_divergence(p, q).sum(-1)
    torch.testing.assert_close(ppo.gaussian_kl(m_p, s_p, m_q, s_q), expected)


def test_entropy_per_dim_matches_torch_distributions() -> None:
    log_std = torch.tensor([-1.0, 0.5, 0.0])
    expected = torch.distributions.Normal(torch.zeros(3), log_std.exp()).entropy().mean()
    torch.testing.assert_close(ppo.gaussian_entropy_per_dim(log_std), expected)


def test_entropy_floor_penalty_only_acts_below_the_floor() -> None:
    above = torch.tensor(0.5, requires_grad=True)
    penalty = ppo.entropy_floor_penalty(above, h_min=0.0, coef=0.1)
    penalty.backward()
    assert float(penalty.detach()) == 0.0 and above.grad is not None and float(above.grad) == 0.0
    below = torch.tensor(-1.0, requires_grad=True)
    penalty = ppo.entropy_floor_penalty(below, h_min=0.0, coef=0.1)
    penalty.backward()
    assert float(penalty.detach()) == pytest.approx(0.1)
    assert below.grad is not None and float(below.grad) < 0.0  # descending raises entropy


def test_ppo_maths_imports_no_service_stack() -> None:
    code = (
        "import sys, learner.ppo, learner.models, learner.normalization, learner.reward_shaping;"
        "print([m for m in ('fastapi', 'sqlalchemy', 'httpx') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_per_clip_grad_squares_add_over_disjoint_parameter_sets() -> None:
    # L_i = A_i(a) + C_i(c): g_i^2 over (a, c) = g_i^2 over a + g_i^2 over c
    torch.manual_seed(0)
    a = torch.randn(3, requires_grad=True)
    c = torch.randn(3, requires_grad=True)
    x = torch.randn(10, 3)
    clip_ids = torch.tensor([0, 0, 1, 1, 1, 3, 3, 0, 1, 3])
    actor_losses, counts = ppo.per_clip_mean((x @ a).sin(), clip_ids, num_clips=4)
    critic_losses, _ = ppo.per_clip_mean((x @ c) ** 2, clip_ids, num_clips=4)
    present = counts > 0
    split = ppo.per_clip_grad_squares(actor_losses, present, [a]) + ppo.per_clip_grad_squares(
        critic_losses, present, [c]
    )
    whole = ppo.per_clip_grad_norms(actor_losses + critic_losses, present, [a, c])
    torch.testing.assert_close(split[present].sqrt(), whole[present])
    assert bool(split[~present].isnan().all()) and bool(whole[~present].isnan().all())


def test_adaptive_learning_rate_keeps_kl_near_the_target() -> None:
    assert ppo.adaptive_learning_rate(1e-4, approx_kl=0.05, desired_kl=0.01) == pytest.approx(
        1e-4 / 1.5
    )
    assert ppo.adaptive_learning_rate(1e-4, approx_kl=0.001, desired_kl=0.01) == pytest.approx(
        1.5e-4
    )
    assert ppo.adaptive_learning_rate(1e-4, approx_kl=0.01, desired_kl=0.01) == 1e-4
    assert ppo.adaptive_learning_rate(1e-4, approx_kl=float("nan"), desired_kl=0.01) == 1e-4
    assert ppo.adaptive_learning_rate(1.1e-6, approx_kl=1.0, desired_kl=0.01) == 1e-6  # bound
