"""Pure maths of the clip scheduler: probabilities, bandits, reward aggregation, normalisers.

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
    "ClipSampler",
    "Moments",
    "UsageMeasure",
    "adaptive_weights_step",
    "aggregate",
    "aggregate_lse",
    "aggregate_max",
    "aggregate_threshold",
    "apply_floor",
    "controller_step",
    "curriculum_factor",
    "curriculum_weights",
    "difficulty_step",
    "discounted_counts",
    "ema_update",
    "merge_moments",
    "normalize",
    "normalize_shares",
    "thompson_probs",
    "ucb_probs",
    "usage_shares",
]
