"""ActorCritic: per-clip value heads, the MoE gate, the Gaussian policy."""

from __future__ import annotations

import math

import torch

from learner.models import MLP, ActorCritic, ModelConfig, linear, native_bfloat16

OBS, ACT, CLIPS = 6, 3, 4


def make(**kwargs: object) -> ActorCritic:
    torch.manual_seed(0)
    return ActorCritic(
        ModelConfig(obs_dim=OBS, action_dim=ACT, num_clips=CLIPS, hidden=(16, 16), **kwargs)
    )  # type: ignore[arg-type]


def test_value_uses_the_head_of_each_samples_clip() -> None:
    model = make(per_clip_value_heads=True)
    with torch.no_grad():
        model.value_heads.bias.copy_(torch.arange(CLIPS, dtype=torch.float32) * 100.0)
    obs = torch.randn(1, OBS).repeat(CLIPS, 1)
    values = model.value(obs, torch.arange(CLIPS))
    all_values = model.all_values(obs[:1])[0]
    torch.testing.assert_close(values, all_values)
    assert len(set(values.round().tolist())) == CLIPS


def test_value_loss_on_one_clip_leaves_the_other_heads_untouched() -> None:
    model = make(per_clip_value_heads=True)
    obs = torch.randn(8, OBS)
    (model.value(obs, torch.zeros(8, dtype=torch.long)) ** 2).mean().backward()
    grad = model.value_heads.weight.grad
    assert grad is not None
    assert float(grad[0].abs().sum()) > 0.0
    assert float(grad[1:].abs().sum()) == 0.0
    assert model.critic_backbone.layers[0].weight.grad is not None  # the backbone is shared


def test_single_value_head_ignores_the_clip() -> None:
    model = make(per_clip_value_heads=False)
    obs = torch.randn(1, OBS).repeat(CLIPS, 1)
    values = model.value(obs, torch.arange(CLIPS))
    torch.testing.assert_close(values, values[:1].expand(CLIPS))


def test_plain_actor_ignores_weights_and_clip() -> None:
    model = make(moe_experts=0)
    obs = torch.randn(5, OBS)
    a = model.action_mean(obs, torch.zeros(5, dtype=torch.long), torch.full((CLIPS,), 0.25))
    b = model.action_mean(obs, torch.full((5,), 3), torch.tensor([1.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(a, b)


def test_moe_gate_is_a_distribution_that_follows_the_soft_priorities_and_clip() -> None:
    model = make(moe_experts=3)
    with torch.no_grad():  # a gate with visible weights, so w and the clip matter
        for layer in model.actor.gate.layers:
            layer.weight.normal_(0.0, 1.0)
    obs = torch.randn(5, OBS)
    clips = torch.zeros(5, dtype=torch.long)
    uniform = torch.full((CLIPS,), 0.25)
    peaked = torch.tensor([0.97, 0.01, 0.01, 0.01])
    gate = model.actor.gate_probs(obs, clips, uniform)
    torch.testing.assert_close(gate.sum(-1), torch.ones(5))
    assert bool((gate >= 0).all())
    assert not torch.allclose(gate, model.actor.gate_probs(obs, clips, peaked))
    assert not torch.allclose(gate, model.actor.gate_probs(obs, clips + 2, uniform))
    mean_uniform = model.action_mean(obs, clips, uniform)
    assert not torch.allclose(mean_uniform, model.action_mean(obs, clips, peaked))


def test_moe_mean_is_the_gate_weighted_sum_of_expert_means() -> None:
    model = make(moe_experts=2)
    obs = torch.randn(4, OBS)
    clips = torch.tensor([0, 1, 2, 3])
    weights = torch.full((CLIPS,), 0.25)
    gate = model.actor.gate_probs(obs, clips, weights)
    experts = torch.stack([e(obs) for e in model.actor.experts], dim=1)
    expected = (gate.unsqueeze(-1) * experts).sum(1)
    torch.testing.assert_close(model.action_mean(obs, clips, weights), expected)


def test_log_prob_and_entropy_match_torch_distributions() -> None:
    model = make(init_log_std=-0.7)
    mean = torch.randn(5, ACT)
    actions = torch.randn(5, ACT)
    dist = torch.distributions.Normal(mean, model.log_std.exp())
    torch.testing.assert_close(model.log_prob(mean, actions), dist.log_prob(actions).sum(-1))
    torch.testing.assert_close(model.entropy_per_dim(), dist.entropy().mean())


def test_act_log_prob_agrees_with_log_prob_of_the_sampled_action() -> None:
    model = make(init_log_std=-0.3)
    obs = torch.randn(6, OBS)
    clips = torch.zeros(6, dtype=torch.long)
    weights = torch.full((CLIPS,), 0.25)
    gen = torch.Generator().manual_seed(3)
    actions, log_prob = model.act(obs, clips, weights, gen)
    mean = model.action_mean(obs, clips, weights)
    torch.testing.assert_close(log_prob, model.log_prob(mean, actions))


def test_sample_uses_the_state_independent_std() -> None:
    model = make(init_log_std=-1.0)
    gen = torch.Generator().manual_seed(0)
    samples = model.sample(torch.zeros(20000, ACT), gen)
    torch.testing.assert_close(
        samples.std(0), torch.full((ACT,), math.exp(-1.0)), atol=0.01, rtol=0
    )


def test_gradnorm_measures_the_actors_output_layers_and_the_critics_last_layer() -> None:
    plain = make()
    moe = make(moe_experts=3)
    assert len(plain.actor.output_weights()) == 1
    assert len(moe.actor.output_weights()) == 3  # every expert's output layer
    assert plain.actor.output_weights()[0].shape == (ACT, 16)
    assert plain.critic_backbone.last.weight.shape == (16, 16)


def test_model_config_round_trips_through_plain_data() -> None:
    config = ModelConfig(obs_dim=3, action_dim=2, num_clips=5, hidden=(8, 4), moe_experts=2)
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_in_place_activations_give_the_out_of_place_values_and_gradients() -> None:
    from learner.models import ACTIVATIONS, MLP

    for activation in ("relu", "tanh", "elu"):
        torch.manual_seed(0)
        net = MLP(OBS, (16, 8), ACT, activation=activation)
        x = torch.randn(5, OBS)
        net(x).pow(2).sum().backward()
        in_place = [p.grad.clone() for p in net.parameters()]  # type: ignore[union-attr]
        net.zero_grad()
        h = x
        for i, layer in enumerate(net.layers):
            h = torch.nn.functional.linear(h, layer.weight, layer.bias)
            h = ACTIVATIONS[activation](h) if i < 2 else h
        h.pow(2).sum().backward()
        torch.testing.assert_close(h, net(x))
        for got, want in zip(in_place, net.parameters(), strict=True):
            torch.testing.assert_close(got, want.grad)


def test_frozen_actor_matches_action_mean_and_ignores_later_updates() -> None:
    model = make()
    obs, ids = torch.randn(7, OBS), torch.randint(0, CLIPS, (7,))
    weights = torch.full((CLIPS,), 1.0 / CLIPS)
    frozen = model.frozen_actor()
    with torch.no_grad():
        before = frozen(obs, ids, weights)
        torch.testing.assert_close(before, model.action_mean(obs, ids, weights))
        for p in model.parameters():
            p.add_(1.0)
        torch.testing.assert_close(frozen(obs, ids, weights), before, rtol=0.0, atol=0.0)
    moe = make(moe_experts=2)
    with torch.no_grad():
        torch.testing.assert_close(
            moe.frozen_actor()(obs, ids, weights), moe.action_mean(obs, ids, weights)
        )


def test_actor_and_critic_parameters_split_the_model() -> None:
    model = ActorCritic(ModelConfig(OBS, ACT, CLIPS, hidden=(16,), moe_experts=2))
    actor = {id(p) for p in model.actor_parameters()}
    critic = {id(p) for p in model.critic_parameters()}
    assert not actor & critic
    assert actor | critic == {id(p) for p in model.parameters()}
    assert id(model.log_std) in actor and id(model.value_heads.weight) in critic


def test_bfloat16_backward_keeps_the_forward_exact_and_the_gradients_close() -> None:
    g = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(64, 32)
    x = torch.randn(256, 64, generator=g, requires_grad=True)
    target = torch.randn(256, 32, generator=g)
    grads = {}
    for dtype in (torch.float32, torch.bfloat16):
        layer.zero_grad()
        x.grad = None
        y = linear(x, layer, dtype)
        if dtype == torch.float32:
            reference_y = y.detach().clone()
        else:  # the forward pass is float32 whatever the backward's precision
            torch.testing.assert_close(y.detach(), reference_y, rtol=0, atol=0)
        ((y - target) ** 2).sum().backward()
        assert x.grad is not None and layer.weight.grad is not None
        grads[dtype] = (x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone())
    for exact, low in zip(grads[torch.float32][:2], grads[torch.bfloat16][:2], strict=True):
        assert low.dtype == torch.float32
        assert not torch.equal(low, exact)  # the products did run in bfloat16
        # bfloat16 keeps 8 significant bits: ~2^-9 relative error per product term
        assert float((low - exact).norm() / exact.norm()) < 1e-2
    torch.testing.assert_close(grads[torch.bfloat16][2], grads[torch.float32][2])  # bias: fp32


def test_linear_without_autograd_is_the_plain_layer() -> None:
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(5, 8)
    with torch.no_grad():
        torch.testing.assert_close(linear(x, layer, torch.bfloat16), layer(x), rtol=0, atol=0)


def test_set_grad_dtype_reaches_every_layer() -> None:
    model = ActorCritic(ModelConfig(OBS, ACT, CLIPS, hidden=(16,), moe_experts=2))
    model.set_grad_dtype(torch.bfloat16)
    assert model.grad_dtype == torch.bfloat16
    assert all(m.grad_dtype == torch.bfloat16 for m in model.modules() if isinstance(m, MLP))
    obs, clip_ids = torch.randn(6, OBS), torch.tensor([0, 1, 2, 3, 1, 2])
    loss = model.action_mean(obs, clip_ids, torch.full((CLIPS,), 1 / CLIPS)).sum()
    (loss + model.value(obs, clip_ids).sum()).backward()
    assert all(p.grad is not None for p in model.parameters() if p is not model.log_std)
    assert isinstance(native_bfloat16(), bool)
