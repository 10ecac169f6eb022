"""Patient-level outcomes derived from the subtype burden plus noise: FEV1 % predicted and a censored survival
time (Weibull hazard rising with emphysema burden and age; uniform administrative censoring)."""

from __future__ import annotations

import numpy as np


def outcomes(rng: np.random.Generator, fractions: dict[str, float]) -> dict:
    """``fractions``: share of lung volume per subtype (``cle``, ``pse``, ``ple``) -> dict of outcomes."""
    draws = rng.standard_normal(3)
    u = rng.uniform(size=2)
    age = float(55 + 8 * draws[0])
    cle, pse, ple = (fractions.get(k, 0.0) for k in ("cle", "pse", "ple"))
    fev1 = 98.0 - 260.0 * cle - 90.0 * pse - 330.0 * ple + 9.0 * draws[1]
    fev1 = float(np.clip(fev1, 15.0, 130.0))
    # Weibull (shape 1.4) with scale shrinking as burden and age grow
    log_hr = 9.0 * cle + 3.0 * pse + 11.0 * ple + 0.04 * (age - 55) + 0.25 * draws[2]
    scale = 14.0 * np.exp(-log_hr / 1.4)
    t_event = float(scale * (-np.log(1 - u[0])) ** (1 / 1.4))
    t_censor = float(2.0 + 8.0 * u[1])
    return {"age": round(age, 1), "fev1_pct_pred": round(fev1, 1), "survival_years": round(min(t_event, t_censor), 3),
            "event": int(t_event <= t_censor), "log_hazard_ratio": round(float(log_hr), 4)}
