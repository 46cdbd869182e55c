"""The actor-critic network: a Gaussian policy and a critic with one value head per clip.

Design note §5: a shared critic backbone with per-clip value heads ``V_i(s)`` (selected by
the active clip id), and optionally a mixture-of-experts actor whose gate sees the soft
priorities ``w`` (``reward_weights``) and the clip one-hot. The log standard deviation is
state independent. Observations arrive already normalised (``learner.normalization``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from learner.ppo import gaussian_entropy_per_dim

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of an :class:`ActorCritic`; saved with checkpoints and experts."""

    obs_dim: int
    action_dim: int
    num_clips: int
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the actor (each expert) and of the critic backbone."""
    per_clip_value_heads: bool = True
    """One value head per clip on a shared backbone (§5); else a single head."""
    moe_experts: int = 0
    """Number of actor experts mixed by the gate (§5); 0 = plain MLP actor."""
    gate_hidden: int = 64
    """Hidden width of the mixture-of-experts gate."""
    init_log_std: float = -1.0
    """Initial log standard deviation of the Gaussian policy."""
    activation: Literal["relu", "tanh", "elu"] = "relu"
    """Hidden activation (ReLU as in DeepMimic, and cheaper than tanh on CPU)."""

    def to_dict(self) -> dict[str, object]:
        """Plain-data form, for checkpoints."""
        data = asdict(self)
        data["hidden"] = list(self.hidden)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ModelConfig:
        """Inverse of :meth:`to_dict`."""
        values = dict(data)
        values["hidden"] = tuple(values["hidden"])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]


def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), per torch.

    Elsewhere bfloat16 products are emulated and slower than float32.
    """
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


class _LowPrecisionGradLinear(torch.autograd.Function):
    """y = x W^T + b in float32; the backward's two products in a lower precision.

    Backward: dL/dx = g W and dL/dW = g^T x, with g = dL/dy, x and W cast to ``dtype``
    (bfloat16: float32's exponent, 8 significant bits; the products accumulate in
    float32 and round once), and dL/db = sum_rows g in float32. The forward pass, hence
    every loss, probability ratio and value, is exact float32; only the gradient
    carries a relative error of ~2^-9 per element, far below a minibatch's sampling
    noise, and Adam's per-parameter scaling does not see a uniform scale error at all.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: Tensor,
        weight: Tensor,
        bias: Tensor,
        dtype: torch.dtype,
    ) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.dtype = dtype  # type: ignore[attr-defined]
        return torch.addmm(bias, x, weight.t())

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, Tensor, Tensor, None]:
        x, weight = ctx.saved_tensors  # type: ignore[attr-defined]
        dtype = ctx.dtype  # type: ignore[attr-defined]
        low = grad.to(dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mm(low, weight.to(dtype)).to(grad.dtype)
        grad_weight = torch.mm(low.t(), x.to(dtype)).to(grad.dtype)
        return grad_x, grad_weight, grad.sum(0), None


def linear(x: Tensor, layer: nn.Linear, grad_dtype: torch.dtype = torch.float32) -> Tensor:
    """``layer(x)`` for a (B, in) batch; with ``grad_dtype`` below float32 and autograd
    recording, the backward products run in that precision (``_LowPrecisionGradLinear``)."""
    if grad_dtype == torch.float32 or not torch.is_grad_enabled() or x.dim() != 2:
        return nn.functional.linear(x, layer.weight, layer.bias)
    return _LowPrecisionGradLinear.apply(x, layer.weight, layer.bias, grad_dtype)  # type: ignore[no-any-return]


def _layer(in_dim: int, out_dim: int, gain: float) -> nn.Linear:
    """A linear layer with orthogonal weights of the given gain and zero bias."""
    layer = nn.Linear(in_dim, out_dim)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "elu": nn.functional.elu,
}

INPLACE_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu_,
    "tanh": torch.tanh_,
    "elu": nn.functional.elu,  # elu_ differentiates from its result: not bit-equal
}
"""The same activations applied in place, for a ``Linear`` output nobody else holds.

Autograd allows it: a linear layer's backward needs its input and weight, not its output,
and relu/tanh/elu differentiate from their result. Saves one (B, width) buffer per layer.
"""


class MLP(nn.Module):
    """Linear layers with an activation between them (and after the last when ``out_dim`` is None).

    The forward pass calls ``F.linear`` directly instead of nesting modules: at the
    rollout's batch of a few envs, per-module call overhead cost more than the maths.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: tuple[int, ...],
        out_dim: int | None,
        out_gain: float = 1.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        widths = [in_dim, *hidden]
        layers = [_layer(a, b, 2.0**0.5) for a, b in itertools.pairwise(widths)]
        if out_dim is not None:
            layers.append(_layer(widths[-1], out_dim, out_gain))
        self.layers = nn.ModuleList(layers)
        self.activation = INPLACE_ACTIVATIONS[activation]
        self._activated = len(hidden)
        """How many leading layers are followed by the activation."""
        self.grad_dtype = torch.float32
        """Precision of the backward products (see :func:`linear`); set by the trainer."""

    def forward(self, x: Tensor) -> Tensor:
        """Apply the layers."""
        for i, layer in enumerate(self.layers):
            x = linear(x, layer, self.grad_dtype)  # type: ignore[arg-type]
            if i < self._activated:
                x = self.activation(x)  # in place on the fresh linear output
        return x

    def frozen(self) -> Callable[[Tensor], Tensor]:
        """A no-grad snapshot of the current weights for the rollout's small batches.

        y = x W^T + b is computed as ``addmm(b, x, W^T)`` with W^T stored contiguous
        (in, out): with a few rows per call, right after an env step has evicted the
        weights from cache, MKL reads that layout about twice as fast as the transposed
        view ``F.linear`` passes (measured ~240 vs ~470 us per 94-256-256-28 call here).
        The snapshot does not follow later parameter updates.
        """
        with torch.no_grad():
            weights = [(lin.weight.t().contiguous(), lin.bias.clone()) for lin in self.layers]
        activation, activated = self.activation, self._activated

        def forward(x: Tensor) -> Tensor:
            for i, (weight_t, bias) in enumerate(weights):
                x = torch.addmm(bias, x, weight_t)
                if i < activated:
                    x = activation(x)
            return x

        return forward

    @property
    def last(self) -> nn.Linear:
        """The last linear layer."""
        return self.layers[-1]  # type: ignore[return-value]


def clip_one_hot(clip_ids: Tensor, num_clips: int) -> Tensor:
    """(B,) clip ids -> (B, K) float one-hot."""
    return nn.functional.one_hot(clip_ids.long(), num_clips).to(torch.float32)


class MLPActor(nn.Module):
    """Plain actor: obs -> action mean."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.net = MLP(config.obs_dim, config.hidden, config.action_dim, 0.01, config.activation)

    def forward(self, obs: Tensor, clip_ids: Tensor, reward_weights: Tensor) -> Tensor:
        """Action mean (B, A); clip ids and weights are unused."""
        return self.net.forward(obs)

    def output_weights(self) -> list[Tensor]:
        """The last layer's weights (what GradNorm measures)."""
        return [self.net.last.weight]


class MoEActor(nn.Module):
    """Mixture of experts: mean = sum_e g_e(obs, w, onehot(i)) * mu_e(obs) (§5)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_clips = config.num_clips
        self.experts = nn.ModuleList(
            MLP(config.obs_dim, config.hidden, config.action_dim, 0.01, config.activation)
            for _ in range(config.moe_experts)
        )
        gate_in = config.obs_dim + 2 * config.num_clips
        self.gate = MLP(gate_in, (config.gate_hidden,), config.moe_experts, 0.01, config.activation)

    def gate_probs(self, obs: Tensor, clip_ids: Tensor, reward_weights: Tensor) -> Tensor:
        """(B, E) gate probabilities: softmax(gate([obs, w, onehot(clip)]))."""
        weights = reward_weights.to(obs.dtype).expand(obs.shape[0], self.num_clips)
        gate_in = torch.cat([obs, weights, clip_one_hot(clip_ids, self.num_clips)], dim=-1)
        return torch.softmax(self.gate.forward(gate_in), dim=-1)

    def forward(self, obs: Tensor, clip_ids: Tensor, reward_weights: Tensor) -> Tensor:
        """Action mean (B, A), the gate-weighted sum of the experts' means."""
        means = torch.stack([expert.forward(obs) for expert in self.experts], dim=1)  # (B, E, A)
        gate = self.gate_probs(obs, clip_ids, reward_weights)
        return (gate.unsqueeze(-1) * means).sum(dim=1)

    def output_weights(self) -> list[Tensor]:
        """Every expert's last layer weights."""
        return [expert.last.weight for expert in self.experts]


class ActorCritic(nn.Module):
    """Gaussian actor (state-independent log std) and a critic with per-clip value heads."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.actor: MLPActor | MoEActor = (
            MoEActor(config) if config.moe_experts > 0 else MLPActor(config)
        )
        self.log_std = nn.Parameter(torch.full((config.action_dim,), config.init_log_std))
        self.critic_backbone = MLP(config.obs_dim, config.hidden, None, 1.0, config.activation)
        heads = config.num_clips if config.per_clip_value_heads else 1
        self.value_heads = _layer(config.hidden[-1], heads, 1.0)
        self.grad_dtype = torch.float32
        """Precision of the backward products of every layer (:meth:`set_grad_dtype`)."""

    def set_grad_dtype(self, dtype: torch.dtype) -> None:
        """Run every linear layer's backward products in ``dtype`` (the forward stays float32).

        bfloat16 roughly halves the update's matrix products on a CPU that multiplies it
        natively (:func:`native_bfloat16`); a training-time setting, not saved with the model.
        """
        self.grad_dtype = dtype
        for module in self.modules():
            if isinstance(module, MLP):
                module.grad_dtype = dtype

    def action_mean(self, obs: Tensor, clip_ids: Tensor, reward_weights: Tensor) -> Tensor:
        """Mean of pi(.|s, i) for (B, obs_dim) obs, (B,) clip ids and (K,) or (B, K) weights."""
        return self.actor.forward(obs, clip_ids, reward_weights)

    def frozen_actor(self) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        """``action_mean`` with the current weights frozen (no grad), for one rollout.

        The plain MLP actor gets a snapshot with inference-friendly weight layout
        (``MLP.frozen``); the mixture-of-experts actor runs as is.
        """
        actor = self.actor
        if isinstance(actor, MLPActor):
            net = actor.net.frozen()
            return lambda obs, clip_ids, reward_weights: net(obs)
        return actor.forward

    def all_values(self, obs: Tensor) -> Tensor:
        """(B, heads) every value head's estimate."""
        return linear(self.critic_backbone.forward(obs), self.value_heads, self.grad_dtype)

    def value(self, obs: Tensor, clip_ids: Tensor) -> Tensor:
        """(B,) V_{c}(s): the head of each sample's clip (or the single head)."""
        values = self.all_values(obs)
        if values.shape[-1] == 1:
            return values[:, 0]
        return values.gather(1, clip_ids.long().unsqueeze(1))[:, 0]

    def log_prob(self, mean: Tensor, actions: Tensor) -> Tensor:
        """(B,) log N(a; mean, diag(exp(log_std))^2), summed over action dims."""
        log_std = self.log_std.expand_as(mean)
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z**2 - log_std - _HALF_LOG_2PI).sum(-1)

    def sample(self, mean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw actions a = mean + exp(log_std) * noise."""
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return mean + torch.exp(self.log_std) * noise

    def act(
        self,
        obs: Tensor,
        clip_ids: Tensor,
        reward_weights: Tensor,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Sample actions and their log probabilities in one pass (the rollout's hot path).

        a = mean + s * z with z ~ N(0, I) (drawn here, or given as ``noise``);
        log pi(a) = -1/2 |z|^2 - sum_a log s_a - A/2 log 2 pi.
        """
        mean = self.actor.forward(obs, clip_ids, reward_weights)
        if noise is None:
            noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return mean + torch.exp(self.log_std) * noise, self.noise_log_prob(noise)

    def noise_log_prob(self, noise: Tensor) -> Tensor:
        """log pi(mean + s * z) from the standard-normal draws z alone (any leading shape).

        log pi = -1/2 |z|^2 - sum_a log s_a - A/2 log 2 pi: with a state-independent std
        the rollout can compute every step's log probability in one call at its end.
        """
        log_norm = self.log_std.sum() + noise.shape[-1] * _HALF_LOG_2PI
        return -0.5 * (noise * noise).sum(-1) - log_norm

    def entropy_per_dim(self) -> Tensor:
        """Policy entropy per action dimension (state independent)."""
        return gaussian_entropy_per_dim(self.log_std)

    def actor_parameters(self) -> list[nn.Parameter]:
        """What the actor loss trains: the actor (experts and gate) and the log std."""
        return [*self.actor.parameters(), self.log_std]

    def critic_parameters(self) -> list[nn.Parameter]:
        """What the value loss trains: the critic backbone and the value heads."""
        return [*self.critic_backbone.parameters(), *self.value_heads.parameters()]
