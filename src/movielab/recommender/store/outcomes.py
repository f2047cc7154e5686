"""What counts as an answer to a recommendation request, in SQL over the `events` table; defined once here.

The world words a failed request in the line's error text (`movielab.contract.outcomes`); the contract gives an
error text exactly to failed requests. The store's request view, the canary's conversions, the monitor's
outcome counters and the drift and feedback-loop figures all take their definition from here.
"""

from __future__ import annotations


def answered_sql(alias: str = "") -> str:
    """SQL condition: a recommendation-request row of `events` (columns prefixed by `alias.` when given) was
    answered with a list of ids: status 200 and no error text (the contract gives failed requests an error text)."""
    p = f"{alias}." if alias else ""
    return f"({p}status = 200 AND {p}error IS NULL)"


def good_answer_sql(alias: str = "") -> str:
    """SQL condition: answered (`answered_sql`) within the latency budget, the `$budget` parameter in ms; what
    availability, the monitor's `ok` outcome and the feedback-loop figures count as a good answer."""
    p = f"{alias}." if alias else ""
    return f"({answered_sql(alias)[1:-1]} AND {p}response_ms <= $budget)"
