"""The online metrics' SQL over the live event store: request outcomes, last-touch conversions, plays and costs.

Reads the live events (not a snapshot), each query up to one ingestion point (`max_seq`), so a window's figures
do not move while ingestion goes on. Failed requests are classified by the world's error texts
(`movielab.contract.outcomes`); a request is answered when `answered_sql` (`movielab.recommender.store.outcomes`)
holds. `monitoring.online` turns these tables into per-arm metrics; the operator's monitor uses `window_cost`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa

from movielab.contract import outcomes
from movielab.recommender.store.events import EventStore
from movielab.recommender.store.outcomes import answered_sql


def arm_request_metrics(
    store: EventStore, arms: pa.Table, start: datetime, end: datetime, conversion_window: timedelta, max_seq: int
) -> tuple[pa.Table, pa.Table]:
    """Per arm and per user of each arm: request outcomes, conversions, completion, ratings.

    `arms` maps `user_id` → `arm`; requests are those in [start, end) ingested up to `max_seq`. See
    `_arm_requests_sql` for what counts as a conversion. Returns two tables:
    - per arm: users, requests, ok, errors by kind, latency p50/p99, conversions, completion, ratings;
    - per user (the unit of randomization): arm, user_id, requests, ok, conversions, latency_ms (sum).
    Arms and users without requests have no row.
    """
    arms = arms.select(["user_id", "arm"]).cast(pa.schema([("user_id", pa.int64()), ("arm", pa.string())]))
    params = {
        "start": start,
        "end": end,
        "max_seq": max_seq,
        "window": conversion_window,
        "default_runtime": store.default_runtime,
    }
    requests = store.read_arrow(_arm_requests_sql(), params, {"_arms": arms})
    plays = store.read_arrow(_PLAYS_SQL, params, {"_arms": arms})
    tables = {"_arm_requests": requests, "_arm_plays": plays}
    return store.read_arrow(_PER_ARM_SQL, None, tables), store.read_arrow(_PER_USER_SQL, None, tables)


def window_cost(store: EventStore, start: datetime, end: datetime) -> dict[str, float]:
    """License cost of the plays in [start, end) (stream time), every user: `plays` (distinct user × movie
    with a watch line), `costed_plays` (of movies whose record gives a cost), `license_cost` (USD, sum over
    the costed plays) and `requests` (recommendation requests)."""
    arms = pa.table({"user_id": pa.array([], pa.int64()), "arm": pa.array([], pa.string())})
    sql = _PLAYS_SQL.replace("JOIN _arms a USING (user_id)", "CROSS JOIN (SELECT 'all' AS arm) a").replace(
        "AND user_id IN (SELECT user_id FROM _arms)", ""
    )
    params = {"start": start, "end": end, "max_seq": store.ingested_seq()}
    played = store.read_arrow(sql, params, {"_arms": arms}).to_pylist()
    requests = store.read(
        """SELECT count(*) FROM events WHERE kind = 'recommendation'
                             AND time >= $start AND time < $end""",
        {"start": start, "end": end},
    )[0][0]
    plays, costed, cost = (
        (0, 0, 0.0) if not played else (played[0]["plays"], played[0]["costed_plays"], played[0]["license_cost"])
    )
    return {"plays": int(plays), "costed_plays": int(costed), "license_cost": float(cost), "requests": int(requests)}


def _arm_requests_sql() -> str:
    """One row per request with its arm and outcome, and last-touch conversions (see `arm_request_metrics`).

    A watch line is credited to the user's latest request at or before it (last touch, so a refresh
    never counts one watch twice). A request converts when such a line is of one of its recommended
    movies, within `$window` of the request; only lines before `$end` count (what the stream has shown).
    Completion is the distinct minutes of the converted movie watched from then until `$end` over its
    runtime; the rating is the user's latest rating of that movie after the conversion.
    """
    return """WITH r AS (
            SELECT e.user_id, a.arm, e.time, e.seq, e.error, e.response_ms, e.recommendations,
                   CASE WHEN e.error IS NULL THEN NULL
                        WHEN e.status = 0 AND starts_with(e.error, '{timeout}') THEN 'timeout'
                        WHEN e.status = 0 AND (starts_with(e.error, '{refused}')
                                               OR starts_with(e.error, '{cannot}')) THEN 'connect'
                        WHEN e.status = 0 THEN 'no_answer'
                        WHEN e.status <> 200 THEN 'http_' || e.status::VARCHAR
                        ELSE 'invalid_body' END AS error_kind, {answered} AS ok
            FROM events e JOIN _arms a USING (user_id)
            WHERE e.kind = 'recommendation' AND e.time >= $start AND e.time < $end AND e.seq <= $max_seq),
        w AS (SELECT user_id, movie_id, minute, time FROM events
              WHERE kind = 'watch' AND time >= $start AND time < $end AND seq <= $max_seq
                AND user_id IN (SELECT user_id FROM _arms)),
        hit AS (
            SELECT r.seq AS rseq, any_value(r.user_id) AS user_id, arg_min(w.movie_id, w.time) AS movie_id,
                   min(w.time) AS at
            FROM w ASOF JOIN r ON w.user_id = r.user_id AND w.time >= r.time
            WHERE r.ok AND w.time < r.time + $window AND list_contains(r.recommendations, w.movie_id)
            GROUP BY r.seq),
        done AS (
            SELECT h.rseq, least(1.0, count(DISTINCT w.minute)
                                 / coalesce(any_value(m.runtime), $default_runtime))::DOUBLE AS completion
            FROM hit h JOIN w ON w.user_id = h.user_id AND w.movie_id = h.movie_id AND w.time >= h.at
                 LEFT JOIN movies m ON m.movie_id = h.movie_id
            GROUP BY h.rseq),
        rated AS (
            SELECT h.rseq, arg_max(e.rating, e.seq) AS rating
            FROM hit h JOIN events e ON e.user_id = h.user_id AND e.movie_id = h.movie_id AND e.kind = 'rate'
                 AND e.time >= h.at AND e.time < $end AND e.seq <= $max_seq
            GROUP BY h.rseq)
        SELECT r.arm, r.user_id, r.ok, r.error_kind, r.response_ms, h.rseq IS NOT NULL AS converted,
               d.completion, t.rating
        FROM r LEFT JOIN hit h ON h.rseq = r.seq LEFT JOIN done d ON d.rseq = r.seq LEFT JOIN rated t ON t.rseq = r.seq""".format(
        timeout=outcomes.TIMEOUT,
        refused=outcomes.CONNECTION_REFUSED,
        cannot=outcomes.CANNOT_CONNECT,
        answered=answered_sql("e"),
    )


# A play is a (user, movie) pair with a watch line in the window (a resumed or rewound viewing is one play);
# its license cost is the movie's current record's. Plays of movies without a cost are counted, not priced.
_PLAYS_SQL = """
SELECT a.arm, count(*) AS plays, count(m.license_cost) AS costed_plays,
       coalesce(sum(m.license_cost), 0)::DOUBLE AS license_cost
FROM (SELECT DISTINCT user_id, movie_id FROM events WHERE kind = 'watch' AND time >= $start AND time < $end
      AND seq <= $max_seq AND user_id IN (SELECT user_id FROM _arms)) p
JOIN _arms a USING (user_id) LEFT JOIN movies m USING (movie_id) GROUP BY a.arm"""

_PER_ARM_SQL = """
SELECT r.*, coalesce(p.plays, 0) AS plays, coalesce(p.costed_plays, 0) AS costed_plays,
       coalesce(p.license_cost, 0.0) AS license_cost
FROM (SELECT arm, count(DISTINCT user_id) AS users, count(*) AS requests, count(*) FILTER (WHERE ok) AS ok,
       quantile_cont(response_ms, 0.5)::DOUBLE AS latency_p50_ms,
       quantile_cont(response_ms, 0.99)::DOUBLE AS latency_p99_ms,
       count(*) FILTER (WHERE converted) AS conversions, avg(completion)::DOUBLE AS completion_mean,
       count(rating) AS ratings, avg(rating)::DOUBLE AS rating_mean,
       histogram(error_kind) FILTER (WHERE error_kind IS NOT NULL) AS errors
      FROM _arm_requests GROUP BY arm) r LEFT JOIN _arm_plays p USING (arm) ORDER BY arm"""

_PER_USER_SQL = """
SELECT arm, user_id, count(*) AS requests, count(*) FILTER (WHERE ok) AS ok,
       count(*) FILTER (WHERE converted) AS conversions, coalesce(sum(response_ms), 0)::DOUBLE AS latency_ms
FROM _arm_requests GROUP BY arm, user_id ORDER BY arm, user_id"""
