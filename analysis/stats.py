"""Comparisons a reviewer can cite: a difference with its 95% interval, a verdict only when
the interval excludes zero, and the seeds per row that would settle an open question.

Method, and why:

- The unit of replication is a training run (a seed). mIoU values of one row are treated
  as draws from a normal distribution; with 2-10 seeds nothing better is testable, and
  mIoU over many pixels is close to normal run to run.
- Both rows with >= 2 seeds: Welch's t interval for the difference of means
  (``scipy.stats.t``, Welch-Satterthwaite degrees of freedom). It does not assume equal
  spreads, and with equal seed counts it is slightly conservative, so the false-verdict
  rate stays at or under 5% for every seed count.
- One row with a single seed: its spread cannot be estimated from itself, so the other
  row's (or ``spread``, a pooled estimate with its degrees of freedom) stands for both
  (a pooled t interval). Both rows with one seed and no ``spread``: no interval can be
  computed: the verdict is inconclusive and the interval unbounded. A single run never
  decides a comparison on its own.
- Rows trained with the same seeds (the seed fixes the data order and augmentation for
  every row, so rows may share each seed's luck): ``paired=True`` uses the t interval of
  the per-seed differences, which removes that shared part. The claims pair two rows
  when both have the same seeds, and compare rows with different seed lists unpaired
  (Welch) with all their seeds, never dropping seeds to pair them. Why: pairing gains
  only as much as the seeds' luck is shared, ``seed_icc`` (the report states it), and
  costs degrees of freedom. Over Tables 2 and 3a of results/v2-synth (10 rows x 5
  seeds) the shared part is small, ICC 0.24 (the 2-seed pilot had suggested far more).
  At that level pairing rows with the same 5 seeds neither gains nor loses, while
  pairing 5 seeds against 3 on the 3 in common has 24% power against Welch's 34% on all
  8; it wins only above an ICC of about 0.6 (``benchmarks/verdicts_bench.py``).
- A spread estimated as exactly zero (identical values) is no estimate: the interval is
  unbounded and the verdict inconclusive.
- ``spread`` with ``df=None`` is a *known* spread (a normal interval): that is how the
  paper's own single-run numbers are compared, with an assumed run-to-run spread that
  the report states as an assumption.
- ``seeds_needed``: the seeds per row for which a two-sided t test at the same level has
  80% power against a true difference of the observed size at the observed spread
  (noncentral t, ``scipy.stats.nct``; for a Welch comparison, with each row's own spread
  and Welch's degrees of freedom); None when the spread is unknown or the difference is
  0, and capped at ``MAX_SEEDS``.
- "No worse" claims are equivalence questions, not the absence of a difference:
  ``no_worse(a, b, margin)`` is supported when the 90% interval's lower end lies above
  ``-margin`` (a one-sided test at 5%: a is not worse than b by more than the margin),
  contradicted when its upper end lies below ``-margin``, inconclusive otherwise.
- "Within M points of each other" (two runs of one spec under two training precisions,
  say) is the two-sided form: ``equivalent(a, b, margin)`` is two one-sided tests at 5%
  (TOST), i.e. the 90% interval lies inside ``(-margin, +margin)``; "different" when it
  lies wholly outside; inconclusive otherwise.

Sequential rule (``sequential=True``), valid however often one looks:

- Every verdict the toolkit prints is a look, and a reviewer who adds seeds until the
  fixed-n interval excludes zero gets a false verdict far more often than 5% (27-29%
  starting from 2 or 3 seeds per row with looks up to 30, ``benchmarks/verdicts_bench.py``).
  The sequential rule uses a confidence sequence instead: intervals that hold for every
  seed count at once, with probability >= 95% (Ville's inequality), so stopping whenever
  they first exclude zero keeps the false-verdict rate <= 5%.
- Which one: Lai's t-mixture (Lai 1976, "On confidence sequences", Ann. Statist. 4;
  Howard, Ramdas, McAuliffe & Sekhon 2021, "Time-uniform, nonparametric, nonasymptotic
  confidence sequences", Ann. Statist. 49, section on Gaussian means with unknown
  variance). On the per-seed differences d_1..d_n of two rows that share their seeds, the
  Bayes factor for mean mu0 with a normal prior on the standardized effect (variance
  ``g`` in units of the differences' sd) and the scale-invariant prior on the sd,
  ``(1 + n g)^(-1/2) ((1 + t^2/nu) / (1 + t^2/(nu (1 + n g))))^((nu + 1)/2)`` with
  ``nu = n - 1`` and ``t`` the t statistic of mu0, is a nonnegative martingale under mu0
  (scale-invariant filtration), so the set of mu0 where it stays below 1/alpha is a 95%
  confidence sequence: ``mean +- t*_n sd/sqrt(n)`` with ``t*_n`` in closed form. Why this
  one: the per-seed values are what the fixed-n rule already models as normal with an
  unknown spread; it needs no assumed spread, no planned maximum number of looks (a
  Lan-DeMets spending design would), and it is exact for normal data at every n.
- ``g = 2``: the prior is centred on effects of about 1.4 sds of the per-seed difference,
  that is a true difference of 2 row sds between independent rows, the size the
  toolkit's power target names. Power by 10 seeds from 3 (looking after each): 75%
  against the fixed-n rule's 98% (whose false-verdict rate in the same loop is 27%);
  g from 1 to 4 changes it by at most 2 points. No verdict is possible before
  ``(1 + n g)^(nu/2) >= 1/alpha`` (4 seeds): the price of looking as often as one likes.
- It needs rows with the same seeds (``--settle`` brings rows to the same seeds first).
  Equivalence claims use the same 95% sequence for their one-sided statements, each then
  wrong at most 5% of the time (conservative). ``seeds_needed``: the seeds per row at
  which the sequence's half-width, at the observed spread, falls to the observed
  difference less a power margin (``seeds_needed_sequential``).

Pure numpy/scipy, no torch. ``diff_intervals`` is the vectorised core (many comparisons
at once, as the calibration tests and benchmarks/verdicts_bench.py use it); ``compare``,
``no_worse`` and ``equivalent`` call it for one pair.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np
from scipy import stats

from searchspace.errors import ToolkitError

ALPHA = 0.05
POWER = 0.80
MAX_SEEDS = 100
SEQUENTIAL_G = 2.0  # Lai's mixture: prior variance of the standardized per-seed effect
ZERO_SPREAD = 1e-9  # mIoU points: a spread this small is float rounding of identical values

SEQUENTIAL_METHOD = "confidence sequence (Lai's t-mixture, same seeds; valid at every look)"

Verdict = Literal["a_better", "b_better", "inconclusive"]
EquivalenceVerdict = Literal["no_worse", "worse", "equivalent", "different", "inconclusive"]


class StatsError(ToolkitError, ValueError):
    """Values that cannot be compared (empty, not finite, not mIoU in points)."""


@dataclass(frozen=True)
class Spread:
    """A run-to-run standard deviation in points; ``df`` None: taken as known."""

    sd: float
    df: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sd) and self.sd > 0):
            raise StatsError(f"spread sd={self.sd!r}: must be a positive number of points")
        if self.df is not None and not self.df >= 1:
            raise StatsError(f"spread df={self.df!r}: must be >= 1 (or None when known)")


@dataclass(frozen=True)
class Comparison:
    """a minus b, in mIoU points."""

    diff: float
    ci: tuple[float, float]  # 95% (90% for no_worse); (-inf, inf) when it cannot be had
    verdict: str  # Verdict or EquivalenceVerdict
    seeds_needed: int | None
    n_a: int
    n_b: int
    sd: float | None  # the spread the interval used
    df: float | None  # its degrees of freedom (None: known spread, or no interval)
    method: str
    margin: float | None = None
    level: float = 1 - ALPHA  # of ``ci``

    @property
    def paired(self) -> bool:
        return self.method.startswith("paired")

    @property
    def decided(self) -> bool:
        return self.verdict != "inconclusive"


def _values(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise StatsError(f"{name}: needs at least one mIoU value")
    if not np.isfinite(arr).all():
        raise StatsError(f"{name}: {arr.tolist()} holds a value that is not a finite number")
    if ((arr < 0) | (arr > 100)).any():
        raise StatsError(f"{name}: {arr.tolist()} holds a value outside [0, 100] (mIoU points)")
    return arr


def diff_intervals(
    a: np.ndarray,
    b: np.ndarray,
    level: float = 1 - ALPHA,
    spread: Spread | None = None,
    paired: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(diff, lower, upper, sd, df) for each row of ``a`` (k, n_a) against ``b`` (k, n_b).

    The interval is two-sided at ``level``; lower/upper are -inf/inf where no interval
    can be computed; df is inf for a known spread and nan where there is none.
    ``paired``: column i of ``a`` and of ``b`` share seed i (a t interval of the per-seed
    differences; sd is then the differences' spread).
    """
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    na, nb = a.shape[1], b.shape[1]
    diff = a.mean(1) - b.mean(1)
    k = diff.shape[0]
    q = 0.5 + level / 2
    if paired and na == nb and na >= 2:
        d = a - b
        sd = d.std(1, ddof=1)
        half = stats.t.ppf(q, na - 1) * sd / math.sqrt(na)
        # identical differences (to rounding) are no spread estimate
        half = np.where(sd > ZERO_SPREAD, half, math.inf)
        return diff, diff - half, diff + half, sd, np.full(k, float(na - 1))
    if na >= 2 and nb >= 2:
        va, vb = a.var(1, ddof=1), b.var(1, ddof=1)
        se2 = va / na + vb / nb
        with np.errstate(invalid="ignore", divide="ignore"):
            df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
        df = np.where(se2 > 0, df, na + nb - 2)
        sd = np.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
        half = np.where(np.sqrt(se2) > ZERO_SPREAD, stats.t.ppf(q, df) * np.sqrt(se2), math.inf)
        return diff, diff - half, diff + half, sd, df
    if spread is None and max(na, nb) >= 2:
        other = a if na >= 2 else b
        sd = other.std(1, ddof=1)
        df = np.full(k, float(other.shape[1] - 1))
    elif spread is not None:
        sd = np.full(k, spread.sd)
        df = np.full(k, math.inf if spread.df is None else float(spread.df))
    else:
        inf = np.full(k, math.inf)
        return diff, -inf, inf, np.full(k, math.nan), np.full(k, math.nan)
    crit = np.where(np.isinf(df), stats.norm.ppf(q), stats.t.ppf(q, np.where(np.isinf(df), 1, df)))
    half = np.where(sd > ZERO_SPREAD, crit * sd * math.sqrt(1 / na + 1 / nb), math.inf)
    return diff, diff - half, diff + half, sd, df


def seed_icc(values: np.ndarray) -> float:
    """How much of the seed-to-seed spread rows trained with the same seed share.

    ``values``: rows x seeds (mIoU, every cell present, >= 2 of each). The consistency
    intraclass correlation ICC(3,1) of a two-way model without replication (seeds as the
    targets, rows as the raters): (MS_seed - MS_error) / (MS_seed + (rows - 1) MS_error).
    It is the correlation between two rows' per-seed values that pairing removes: a
    paired difference has variance 2 sd^2 (1 - ICC) against 2 sd^2 unpaired. Can be
    negative (no shared part, estimated with noise).
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 2 or min(x.shape) < 2 or not np.isfinite(x).all():
        raise StatsError(f"seed_icc: needs a rows x seeds table of finite values, got {x.shape}")
    k, n = x.shape
    row_means, seed_means, grand = x.mean(1), x.mean(0), x.mean()
    ms_seed = k * ((seed_means - grand) ** 2).sum() / (n - 1)
    resid = x - row_means[:, None] - seed_means[None, :] + grand
    ms_error = (resid**2).sum() / ((k - 1) * (n - 1))
    denom = ms_seed + (k - 1) * ms_error
    return float((ms_seed - ms_error) / denom) if denom > 0 else 0.0


def seeds_needed(
    diff: float,
    sd: float | None,
    alpha: float = ALPHA,
    power: float = POWER,
    paired: bool = False,
    sd_b: float | None = None,
) -> int | None:
    """Seeds per row for a two-sided t test at ``alpha`` to reach ``power`` against
    ``diff`` at spread ``sd`` (of one row's seeds, or of the per-seed differences when
    ``paired``); None if it cannot be estimated, ``MAX_SEEDS`` + 1 if more.

    ``sd_b``: the second row's spread when the rows are compared by Welch's interval with
    spreads of their own. Its degrees of freedom fall from 2n - 2 toward n - 1 as one
    spread dominates, which a pooled spread would overlook (0.13 against 1.87 points:
    3 seeds by the pooled formula, where Welch's interval at 3 seeds each stays wide)."""
    other = sd if sd_b is None or paired else sd_b
    spreads = (sd, other)
    if any(x is None or not math.isfinite(x) or x < 0 for x in spreads) or sd + other <= 0:
        return None
    if diff == 0 or not math.isfinite(diff):
        return None
    n = np.arange(2, MAX_SEEDS + 1)  # every candidate at once: power grows with n
    if paired:
        df, se = n - 1, sd / np.sqrt(n)
    else:
        va, vb = sd**2, other**2
        df = (va + vb) ** 2 * (n - 1) / (va**2 + vb**2)  # Welch-Satterthwaite, n per row
        se = np.sqrt((va + vb) / n)
    ncp = abs(diff) / se
    crit = stats.t.ppf(1 - alpha / 2, df)
    reached = np.flatnonzero(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp) >= power)
    return int(n[reached[0]]) if reached.size else MAX_SEEDS + 1


def _one(x: np.ndarray) -> float | None:
    v = float(x[0])
    return v if math.isfinite(v) else None


def _power_spreads(
    va: np.ndarray, vb: np.ndarray, sd: np.ndarray, unpaired_welch: bool
) -> tuple[float | None, float | None]:
    """(sd, sd_b) for ``seeds_needed``: each row's own spread where the interval is
    Welch's, else the one spread the interval used."""
    if unpaired_welch:
        return float(va.std(ddof=1)), float(vb.std(ddof=1))
    return _one(sd), None


def sequence_crit(n: np.ndarray | int, alpha: float = ALPHA, g: float = SEQUENTIAL_G) -> np.ndarray:
    """``t*_n`` of Lai's t-mixture confidence sequence: the interval at n per-seed
    differences is ``mean +- t*_n sd / sqrt(n)``; inf where the mixture cannot reach
    ``1/alpha`` yet (few seeds) or n < 2."""
    n = np.asarray(n, dtype=float)
    nu = np.maximum(n - 1, 1)
    big = 1 + n * g
    r = (np.sqrt(big) / alpha) ** (2 / (nu + 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        t2 = nu * (r - 1) / (1 - r / big)
    return np.where((n >= 2) & (r < big), np.sqrt(np.where(r < big, t2, 1.0)), math.inf)


def sequence_intervals(
    d: np.ndarray, alpha: float = ALPHA
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean, lower, upper, sd) of the confidence sequence for each row of ``d`` (k, n):
    per-seed differences; vectorised like ``diff_intervals``."""
    d = np.atleast_2d(np.asarray(d, dtype=float))
    n = d.shape[1]
    mean = d.mean(1)
    sd = d.std(1, ddof=1) if n >= 2 else np.full(len(d), math.nan)
    crit = float(sequence_crit(n, alpha))
    with np.errstate(invalid="ignore"):
        half = np.where(np.nan_to_num(sd) > ZERO_SPREAD, crit * sd / math.sqrt(n), math.inf)
    return mean, mean - half, mean + half, sd


def running_sequence(d: np.ndarray, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) after each seed 1..n for each row of ``d`` (studies, n): every look of
    a reviewer who adds one seed per row at a time (the simulations use it)."""
    d = np.atleast_2d(np.asarray(d, dtype=float))
    n = np.arange(1, d.shape[1] + 1)
    mean = d.cumsum(1) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        var = ((d**2).cumsum(1) - n * mean**2) / (n - 1)
        sd = np.sqrt(np.maximum(var, 0.0))
        half = np.where(sd > ZERO_SPREAD, sequence_crit(n, alpha) * sd / np.sqrt(n), math.inf)
    return mean - half, mean + half


def seeds_needed_sequential(
    diff: float, sd: float | None, alpha: float = ALPHA, power: float = POWER
) -> int | None:
    """Seeds per row (same seeds, per-seed differences of spread ``sd``) at which the
    sequence would exclude zero with probability ``power`` against ``diff``, judged at
    that seed count alone (a looker who stops earlier needs fewer; so it errs long);
    None if it cannot be estimated, ``MAX_SEEDS`` + 1 if more."""
    if sd is None or not math.isfinite(sd) or sd <= 0 or diff == 0 or not math.isfinite(diff):
        return None
    n = np.arange(2, MAX_SEEDS + 1)
    crit = sequence_crit(n, alpha)
    ncp = abs(diff) / (sd / np.sqrt(n))
    finite = np.isfinite(crit)
    power_n = np.zeros(len(n))
    power_n[finite] = stats.nct.sf(crit[finite], n[finite] - 1, ncp[finite])
    reached = np.flatnonzero(power_n >= power)
    return int(n[reached[0]]) if reached.size else MAX_SEEDS + 1


def _sequential_pair(va: np.ndarray, vb: np.ndarray, what: str) -> np.ndarray:
    if va.size != vb.size:
        raise StatsError(
            f"{what}: the sequential rule compares rows with the same seeds, got {va.size} and "
            f"{vb.size} (--settle brings the rows to the same seeds)"
        )
    return va - vb


def compare(
    a: Sequence[float],
    b: Sequence[float],
    *,
    spread: Spread | None = None,
    alpha: float = ALPHA,
    paired: bool = False,
    sequential: bool = False,
) -> Comparison:
    """Is row a's mIoU higher than row b's? Per-seed values in points, any lengths >= 1.

    ``paired``: a[i] and b[i] were trained with the same seed i, which fixes the data
    order and augmentation for every row, so a seed's luck is shared; the per-seed
    differences then carry less noise than two independent samples (with >= 2 seeds
    each, equal counts; otherwise the unpaired interval is used).
    ``sequential``: the anytime-valid rule (module docstring), on rows with the same
    seeds; its interval is a confidence sequence, valid however often one has looked.
    """
    va, vb = _values(a, "a"), _values(b, "b")
    if sequential:
        d = _sequential_pair(va, vb, "compare")
        mean, lo, hi, sd = sequence_intervals(d, alpha)
        low, high = float(lo[0]), float(hi[0])
        seq_verdict: Verdict = "a_better" if low > 0 else "b_better" if high < 0 else "inconclusive"
        return Comparison(
            diff=float(mean[0]), ci=(low, high), verdict=seq_verdict,
            seeds_needed=seeds_needed_sequential(float(mean[0]), _one(sd), alpha),
            n_a=va.size, n_b=vb.size, sd=_one(sd), df=float(va.size - 1) if va.size >= 2 else None,
            method=SEQUENTIAL_METHOD, level=1 - alpha,
        )  # fmt: skip
    pair = paired and va.size == vb.size >= 2
    diff, lo, hi, sd, df = diff_intervals(va, vb, 1 - alpha, spread, paired=pair)
    low, high = float(lo[0]), float(hi[0])
    verdict: Verdict = "a_better" if low > 0 else "b_better" if high < 0 else "inconclusive"
    sd_a, sd_b = _power_spreads(va, vb, sd, not pair and min(va.size, vb.size) >= 2)
    return Comparison(
        diff=float(diff[0]),
        ci=(low, high),
        verdict=verdict,
        seeds_needed=seeds_needed(float(diff[0]), sd_a, alpha, paired=pair, sd_b=sd_b),
        n_a=va.size,
        n_b=vb.size,
        sd=_one(sd),
        df=_one(df),
        method="paired t interval (same seeds)" if pair else _method(va.size, vb.size, spread),
        level=1 - alpha,
    )


def equivalence(
    a: Sequence[float],
    b: Sequence[float],
    margin: float,
    *,
    two_sided: bool,
    spread: Spread | None = None,
    alpha: float = ALPHA,
    paired: bool = False,
    sequential: bool = False,
) -> Comparison:
    """The 90% interval (one-sided tests at ``alpha``) against the margin: is a no worse than
    b by more than ``margin`` points (``no_worse``), or are the two within ``margin`` points
    of each other (``two_sided``, ``equivalent``)? ``sequential``: the 95% confidence
    sequence instead (rows with the same seeds; each one-sided statement errs <= 5%)."""
    if not (math.isfinite(margin) and margin > 0):
        raise StatsError(f"margin={margin!r}: must be a positive number of points")
    va, vb = _values(a, "a"), _values(b, "b")
    pair = paired and va.size == vb.size >= 2
    if sequential:
        mean, lo, hi, sd = sequence_intervals(_sequential_pair(va, vb, "equivalence"), alpha)
        diff, df = mean, np.full(1, float(va.size - 1) if va.size >= 2 else math.nan)
    else:
        diff, lo, hi, sd, df = diff_intervals(va, vb, 1 - 2 * alpha, spread, paired=pair)
    low, high, d = float(lo[0]), float(hi[0]), float(diff[0])
    sd_a, sd_b = _power_spreads(va, vb, sd, not pair and min(va.size, vb.size) >= 2)
    verdict: EquivalenceVerdict
    if two_sided:
        inside, outside = -margin < low and high < margin, high < -margin or low > margin
        verdict = "equivalent" if inside else "different" if outside else "inconclusive"
        room = margin - abs(d)  # how far the nearer bound is from the observed difference
    else:
        verdict = "no_worse" if low > -margin else "worse" if high < -margin else "inconclusive"
        room = d + margin
    if sequential:
        needed = seeds_needed_sequential(room, _one(sd), alpha) if room > 0 else None
        method = SEQUENTIAL_METHOD
    else:
        # each one-sided test at alpha against its bound: the power formula at 2 alpha,
        # for the nearer bound (the binding one)
        needed = seeds_needed(room, sd_a, 2 * alpha, paired=pair, sd_b=sd_b) if room > 0 else None
        method = "paired t interval (same seeds)" if pair else _method(va.size, vb.size, spread)
    return Comparison(
        diff=d,
        ci=(low, high),
        verdict=verdict,
        seeds_needed=needed,
        n_a=va.size,
        n_b=vb.size,
        sd=_one(sd),
        df=_one(df),
        method=method + f"; equivalence margin {points(margin)}",
        margin=margin,
        level=1 - alpha if sequential else 1 - 2 * alpha,
    )


def points(x: float) -> str:
    """``1 point``, ``0.5 points``: a margin in words."""
    return f"{x:g} point" + ("" if x == 1 else "s")


no_worse = partial(equivalence, two_sided=False)
equivalent = partial(equivalence, two_sided=True)


def _method(na: int, nb: int, spread: Spread | None) -> str:
    if na >= 2 and nb >= 2:
        return "Welch t interval"
    if spread is None and max(na, nb) >= 2:
        return "pooled t interval (spread of the row with several seeds)"
    if spread is not None:
        known = "known spread" if spread.df is None else f"pooled spread, {spread.df:g} df"
        return f"{known} {spread.sd:g} points" + (f" ({spread.source})" if spread.source else "")
    return "single runs with no spread: no interval"


# --- val images as a sample too: a paired bootstrap over images and seeds ------------------


@dataclass(frozen=True)
class RunCounts:
    """One run's per-image, per-class intersection and union pixel counts (images x C)."""

    ids: tuple[str, ...]
    intersection: np.ndarray
    union: np.ndarray

    @classmethod
    def from_record(cls, per_image: dict) -> RunCounts:
        inter = np.asarray(per_image["intersection"], dtype=np.int64)
        union = np.asarray(per_image["union"], dtype=np.int64)
        if inter.shape != union.shape or inter.ndim != 2 or len(per_image["ids"]) != len(inter):
            raise StatsError("per-image counts: ids, intersection and union do not line up")
        return cls(tuple(per_image["ids"]), inter, union)


def _miou_of_weights(weights: np.ndarray, run: RunCounts) -> np.ndarray:
    """mIoU (points) of each bootstrap replicate: images weighted by how often drawn."""
    inter = weights @ run.intersection
    union = weights @ run.union
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return 100.0 * np.nanmean(iou, axis=1)


def image_bootstrap(
    a: Sequence[RunCounts],
    b: Sequence[RunCounts],
    *,
    draws: int = 2000,
    level: float = 1 - ALPHA,
    seed: int = 0,
    paired: bool = False,
) -> tuple[float, tuple[float, float]]:
    """(diff of mean mIoU, percentile interval) resampling val images (the same draw for
    both rows: a paired bootstrap, since both rows were scored on the same images) and
    seeds: within each row, or, with ``paired`` (rows trained with the same seeds, in the
    same order), the same seeds for both rows, as the paired t interval pairs them. It
    adds what the seed-only interval leaves out: another val set from the same
    distribution could rank the rows differently. With 2-5 seeds a percentile bootstrap
    of seeds is rough (it shrinks the seed spread by sqrt((n-1)/n)), so it is reported
    beside the t interval, at the same level, and does not decide verdicts on its own."""
    if not a or not b:
        raise StatsError("image bootstrap: each row needs at least one run with per-image counts")
    if paired and len(a) != len(b):
        raise StatsError(
            f"image bootstrap: paired rows need the same seeds, got {len(a)} and {len(b)} runs"
        )
    ids = a[0].ids
    if any(r.ids != ids for r in (*a, *b)):
        raise StatsError("image bootstrap: the runs were not scored on the same val images")
    rng = np.random.default_rng(seed)
    n_img = len(ids)
    weights = rng.multinomial(n_img, np.full(n_img, 1.0 / n_img), size=draws).astype(float)

    def row_means(runs: Sequence[RunCounts], pick: np.ndarray | None = None) -> np.ndarray:
        per_run = np.stack([_miou_of_weights(weights, r) for r in runs], axis=1)  # draws x n
        if pick is None:
            pick = rng.integers(0, len(runs), size=(draws, len(runs)))
        return np.take_along_axis(per_run, pick, axis=1).mean(axis=1)

    shared = rng.integers(0, len(a), size=(draws, len(a))) if paired else None
    diffs = row_means(a, shared) - row_means(b, shared)
    full = np.ones((1, n_img))
    point = float(
        np.mean([_miou_of_weights(full, r)[0] for r in a])
        - np.mean([_miou_of_weights(full, r)[0] for r in b])
    )
    lo, hi = np.percentile(diffs, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return point, (float(lo), float(hi))
