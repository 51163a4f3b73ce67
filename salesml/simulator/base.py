"""Shared vocabulary and array helpers for the simulator (``salesml.simulator``).

Time is carried as int64 microseconds since the epoch (UTC) until the Arrow boundary, so the
hot paths stay plain numpy.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SEC = 1_000_000
HOUR = 3600 * SEC
DAY = 24 * HOUR
WEEK = 7 * DAY
YEAR = 365 * DAY

INDUSTRIES = ("saas", "finance", "retail", "healthcare", "manufacturing")
REGIONS = ("emea", "na", "apac", "latam")
REGION_P = (0.30, 0.35, 0.20, 0.15)
LATAM = REGIONS.index("latam")
PRODUCTS = ("edr", "siem", "cloud", "iam")
TIERS = ("basic", "pro", "enterprise")
SENIORITY = ("junior", "mid", "senior")

TS_TYPE = pa.timestamp("us", tz="UTC")


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def floor_s(us: np.ndarray) -> np.ndarray:
    """Whole seconds: exports rarely carry sub-second CRM times, and it keeps CSVs tidy."""
    return (us // SEC) * SEC


def ts(us: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    return pa.array(np.asarray(us, dtype=np.int64), type=TS_TYPE, mask=mask)


def ids(prefix: str, start: int, n: int, width: int) -> pa.Array:
    """``prefix`` + zero-padded running number, built in Arrow (no per-row Python)."""
    nums = pc.cast(pa.array(np.arange(start, start + n, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(nums, width, "0"), "")


def labels(vocab: tuple[str, ...], idx: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """Category codes -> strings; ``mask`` True marks nulls."""
    take = pa.array(np.asarray(idx, dtype=np.int64), mask=mask)
    return pa.array(list(vocab), type=pa.string()).take(take)


def pick(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One categorical draw per row of a (rows, k) weight matrix."""
    cum = np.cumsum(weights, axis=1)
    u = rng.random(len(weights)) * cum[:, -1]
    return np.minimum((u[:, None] >= cum).sum(axis=1), weights.shape[1] - 1)


def week_of_year_season(weeks: np.ndarray) -> np.ndarray:
    """Mild yearly cycle plus a year-end holiday dip, as a multiplier per week."""
    days = weeks.astype("datetime64[us]")
    doy = (days - days.astype("datetime64[Y]")).astype("timedelta64[D]").astype(np.int64)
    holiday = (doy >= 355) | (doy < 4)
    return (1 + 0.05 * np.sin(2 * np.pi * doy / 365.25)) * np.where(holiday, 0.9, 1.0)
