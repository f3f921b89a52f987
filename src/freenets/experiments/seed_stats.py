"""Statistics over the seeds of one table cell (paper, section 5; our Table 2).

A cell's accuracy is a :class:`Spread` (mean and sample standard deviation, ``ddof=1``). Two
models of the same seed share the data split, sample order and initial weights, so they are
compared by their per-seed differences (:func:`paired_differences`), summarised by the mean with
a Student-t interval (:func:`t_interval`, :data:`CONFIDENCE`). Where an interval includes zero,
:func:`detectable_difference` says how large a difference those seeds could have found, so that
"no difference" reads with its resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from freenets.experiments.results import ResultRow

CONFIDENCE = 0.95
POWER = 0.8


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation of ``n`` values; ``nan`` where undefined."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        """The spread of ``values``: ``n`` 0 and ``nan`` for none, ``nan`` std for one."""
        if not values:
            return cls(math.nan, math.nan, 0)
        array = np.asarray(values, dtype=np.float64)
        std = float(array.std(ddof=1)) if array.size > 1 else math.nan
        return cls(float(array.mean()), std, int(array.size))


@dataclass(frozen=True)
class Interval:
    """A mean with a two-sided t confidence interval ``[low, high]`` over ``n`` values."""

    mean: float
    low: float
    high: float
    n: int


def t_interval(values: list[float], confidence: float = CONFIDENCE) -> Interval:
    """Student-t interval for the mean of ``values``; bounds are ``nan`` for fewer than 2."""
    if not values:
        return Interval(math.nan, math.nan, math.nan, 0)
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    if array.size < 2:
        return Interval(mean, math.nan, math.nan, 1)
    from scipy import stats  # scikit-learn's dependency; imported here to keep the CLI quick

    quantile = float(stats.t.ppf(0.5 + confidence / 2, df=array.size - 1))
    half = quantile * float(array.std(ddof=1)) / math.sqrt(array.size)
    return Interval(mean, mean - half, mean + half, int(array.size))


def paired_differences(model: dict[int, ResultRow], other: dict[int, ResultRow]) -> list[float]:
    """Per-seed test accuracy differences ``model - other`` in points, over the seeds of both."""
    return [
        100.0 * (model[seed].measured_test_accuracy - other[seed].measured_test_accuracy)
        for seed in sorted(set(model) & set(other))
    ]


def detectable_difference(
    values: list[float], confidence: float = CONFIDENCE, power: float = POWER
) -> float:
    """The smallest true mean difference a paired t-test on ``values`` finds with ``power``.

    The usual approximation for a two-sided test at ``1 - confidence``: with ``n`` paired
    differences of sample standard deviation ``s``, ``(t_{1 - alpha/2} + t_{power}) * s /
    sqrt(n)``, both quantiles of Student's t with ``n - 1`` degrees of freedom. ``nan`` for fewer
    than 2 values.
    """
    if len(values) < 2:
        return math.nan
    from scipy import stats  # scikit-learn's dependency; imported here to keep the CLI quick

    array = np.asarray(values, dtype=np.float64)
    df = array.size - 1
    quantiles = float(stats.t.ppf(0.5 + confidence / 2, df)) + float(stats.t.ppf(power, df))
    return quantiles * float(array.std(ddof=1)) / math.sqrt(array.size)
