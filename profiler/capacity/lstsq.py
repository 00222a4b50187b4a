"""The least-squares step of calibration (profiler/capacity/calibrate.py): the decode step is
linear in theta = (1/eta_B, 1/eta_F, alpha, t_overhead) once each operator's regime is known, so
each fit solves A theta = y in relative error, with a weak ridge prior toward the defaults and
box bounds, and leaves at their priors the factors the points cannot separate (a column with no
signal, or one the others explain: variance inflation above VIF_MAX). Plain numpy.
"""

from __future__ import annotations

import numpy as np

RIDGE = 1e-3
# on theta: an efficiency is at most 1 (physics: no fit may need more than the GPU's peak
# bandwidth or FLOP/s), at least 1%
BOUNDS = [(1.0, 100.0), (1.0, 100.0), (0.0, 1e-2), (0.0, 10.0)]
VIF_MAX = 100.0  # a factor whose column the others explain to R^2 > 0.99 is not separable
DROP_ORDER = (2, 3, 1, 0)  # which factor gives way first when two cannot be told apart


def unidentified(A: np.ndarray, obs: np.ndarray) -> dict[int, str]:
    """Factors these points cannot pin down, with why: a column with no signal (no
    collectives, nothing compute-bound) or one the other columns explain (variance inflation
    above VIF_MAX: e.g. one layout and one request shape cannot separate the step overhead
    from the bandwidth term). The least separable gives way first, in DROP_ORDER."""
    Aw = A / obs[:, None]
    scale = np.sqrt((Aw**2).mean(axis=0))
    out: dict[int, str] = {
        j: "no signal in these points" for j in range(4) if scale[j] <= 1e-9 * scale.max()
    }
    while True:
        free = [j for j in range(4) if j not in out]
        if len(free) < 2:
            return out
        As = Aw[:, free] / scale[free]
        worst: tuple[float, int] | None = None
        for pos, j in enumerate(free):
            others = np.delete(As, pos, axis=1)
            coef, *_ = np.linalg.lstsq(others, As[:, pos], rcond=None)
            resid = As[:, pos] - others @ coef
            r2 = 1.0 - float(resid @ resid) / max(float(As[:, pos] @ As[:, pos]), 1e-300)
            vif = 1.0 / max(1.0 - r2, 1e-12)
            if vif > VIF_MAX:
                rank = DROP_ORDER.index(j)
                if worst is None or rank < worst[0]:
                    worst = (rank, j)
        if worst is None:
            return out
        out[worst[1]] = "not separable from the other factors with these points"


def solve(A: np.ndarray, y: np.ndarray, obs: np.ndarray, theta0: np.ndarray) -> np.ndarray:
    """Least squares in relative error with a weak ridge prior toward theta0 and box bounds
    (a factor hitting a bound is fixed there and the rest refitted)."""
    w = 1.0 / obs
    Aw, yw = A * w[:, None], y * w
    scale = np.sqrt((Aw**2).mean(axis=0))
    scale = np.where(scale > 0, scale, 1.0)
    # factors the points cannot pin down keep their prior values
    fixed: dict[int, float] = {j: float(theta0[j]) for j in unidentified(A, obs)}
    for _ in range(5):
        free = [j for j in range(4) if j not in fixed]
        if not free:
            break
        rhs = yw - sum((Aw[:, j] * v for j, v in fixed.items()), np.zeros_like(yw))
        As = Aw[:, free] / scale[free]
        prior = theta0[free] * scale[free]
        lam = np.sqrt(RIDGE)
        M = np.vstack([As, lam * np.eye(len(free))])
        b = np.concatenate([rhs, lam * prior])
        u, *_ = np.linalg.lstsq(M, b, rcond=None)
        theta = theta0.copy()
        for j, v in fixed.items():
            theta[j] = v
        theta[free] = u / scale[free]
        out = [j for j in free if not (BOUNDS[j][0] <= theta[j] <= BOUNDS[j][1])]
        if not out:
            return theta
        for j in out:
            fixed[j] = float(np.clip(theta[j], *BOUNDS[j]))
    theta = theta0.copy()
    for j, v in fixed.items():
        theta[j] = v
    return theta
