"""Pure maths of the clip scheduler: probabilities, bandits, reward aggregation, normalisers,
and the per-clip statistics as composable batch deltas (``clip_stats``).

numpy only (no web, database or HTTP imports); random generators are passed in as
``np.random.Generator``. Arrays are float64 over clips; inputs are never mutated.
"""

from scheduler_service.algorithms.aggregation import (
    AggregationKind,
    adaptive_weights_step,
    aggregate,
    aggregate_lse,
    aggregate_max,
    aggregate_threshold,
    curriculum_factor,
    curriculum_weights,
)
from scheduler_service.algorithms.bandits import (
    discounted_counts,
    ema_update,
    thompson_probs,
    ucb_probs,
)
from scheduler_service.algorithms.clip_stats import (
    ClipDelta,
    ClipStats,
    apply_delta,
    batch_delta,
    compose,
    fold,
)
from scheduler_service.algorithms.normalizers import Moments, merge_moments, normalize
from scheduler_service.algorithms.probabilities import (
    UsageMeasure,
    apply_floor,
    controller_step,
    difficulty_step,
    normalize_shares,
    usage_shares,
)
from scheduler_service.algorithms.sampler import ClipSampler

__all__ = [
    "AggregationKind",
    "ClipDelta",
    "ClipSampler",
    "ClipStats",
    "Moments",
    "UsageMeasure",
    "adaptive_weights_step",
    "aggregate",
    "aggregate_lse",
    "aggregate_max",
    "aggregate_threshold",
    "apply_delta",
    "apply_floor",
    "batch_delta",
    "compose",
    "controller_step",
    "curriculum_factor",
    "curriculum_weights",
    "difficulty_step",
    "discounted_counts",
    "ema_update",
    "fold",
    "merge_moments",
    "normalize",
    "normalize_shares",
    "thompson_probs",
    "ucb_probs",
    "usage_shares",
]
