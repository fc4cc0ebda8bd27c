"""Minimum sample size for developing a binary-outcome prediction model (Riley et al.).

Riley RD, Ensor J, Snell KIE, et al. Calculating the sample size required for developing
a clinical prediction model. BMJ 2020;368:m441 (criteria from Riley et al., Stat Med
2019;38:1276-96). With P candidate parameters, anticipated Cox-Snell R^2 R, outcome
proportion phi:

1. expected uniform shrinkage S >= 0.9:   n1 = P / ((S - 1) ln(1 - R / S))
2. optimism in apparent Nagelkerke R^2 <= delta (0.05): as 1 with
   S = R / (R + delta R_max),  R_max = 1 - (phi^phi (1 - phi)^(1 - phi))^2
3. overall risk (intercept) within +-margin (0.05): n3 = (1.96 / margin)^2 phi (1 - phi)

The minimum is the largest (events = ceil(n phi)); events per parameter = n phi / P.
"""

from __future__ import annotations

import math
from typing import Any

from scipy import optimize, stats


def expected_shrinkage(n: int, parameters: int, r2_cox_snell: float) -> float:
    """S solving n = P / ((S - 1) ln(1 - R / S)): the expected uniform shrinkage at size n."""
    f = lambda s: parameters / ((s - 1) * math.log(1 - r2_cox_snell / s)) - n  # noqa: E731
    return float(optimize.brentq(f, r2_cox_snell + 1e-12, 1 - 1e-12))


def riley_binary(r2_cox_snell: float, parameters: int, prevalence: float, *, shrinkage: float = 0.9,
                 delta: float = 0.05, margin: float = 0.05) -> dict[str, Any]:
    """The three criteria, the final minimum n, its events and events per parameter."""
    if not 0 < prevalence < 1:
        raise ValueError("prevalence must be between 0 and 1")
    phi = prevalence
    r2_max = 1 - math.exp(2 * (phi * math.log(phi) + (1 - phi) * math.log(1 - phi)))
    if not 0 < r2_cox_snell < r2_max:
        raise ValueError(f"Cox-Snell R^2 must lie in (0, {r2_max:.3f}) for this prevalence")

    def n_for(s: float) -> int:
        return math.ceil(parameters / ((s - 1) * math.log(1 - r2_cox_snell / s)))

    s2 = r2_cox_snell / (r2_cox_snell + delta * r2_max)
    z = stats.norm.ppf(0.975)
    crit = {"shrinkage": n_for(shrinkage), "optimism_r2": n_for(s2),
            "intercept": math.ceil((z / margin) ** 2 * phi * (1 - phi))}
    final = max(crit.values())
    return {
        "criteria": crit, "minimum_n": final, "minimum_events": math.ceil(final * phi),
        "events_per_parameter": final * phi / parameters,
        "shrinkage_at_minimum": expected_shrinkage(final, parameters, r2_cox_snell),
        "r2_cox_snell": r2_cox_snell, "r2_max": r2_max, "r2_nagelkerke": r2_cox_snell / r2_max,
        "parameters": parameters, "prevalence": phi,
    }
