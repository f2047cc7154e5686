"""The recommendation service in process: the contract body, fallbacks, bad ids, metrics, live swaps."""

from __future__ import annotations

import json
import re
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from movielab.auth import ensure_tokens
from movielab.recommender.errors import BadSegments, BadUserId, NoChallenger
from movielab.recommender.serving import admin as admin_routes
from movielab.recommender.serving import traffic
from movielab.recommender.serving.admin import create_admin_app
from movielab.recommender.serving.answers import SOURCES, AnswerTable
from movielab.recommender.serving.app import create_app, parse_user_id
from movielab.recommender.serving.state import drain, drop_challenger, promote, serving, set_challenger, set_share, swap
from movielab.recommender.serving.versions import load_version, read_segments, write_segments
from movielab.recommender.store.records import N_SEGMENTS
from movielab.recommender.training.data import TrainingData
from movielab.recommender.training.models import create
from movielab.recommender.training.provenance import Provenance

with warnings.catch_warnings():
    # starlette asks for `httpx2` instead of `httpx`; the client works the same with either.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

ITEMS = [f"movie+{i}+{1990 + i}" for i in range(30)]
BODY = re.compile(r"[a-z0-9]+(?:\+[a-z0-9]+)*(?:,[a-z0-9]+(?:\+[a-z0-9]+)*)*")
PROV = Provenance("fake", "3", "snap-1", "abc123", "2026-03-20T08:12:38")


class FakeModel:
    """Users 10, 20, 30, 40: everyone ranks items by index (user 20 reversed); seen items are left out."""

    def __init__(self, seen: dict[int, set[int]] | None = None, shift: int = 0, empty_segments: tuple = ()) -> None:
        self.name = "fake"
        self.users = np.array([10, 20, 30, 40], np.int64)
        self.items = ITEMS
        self.seen = seen if seen is not None else {10: {0, 2}, 30: set(range(30))}  # user 30 has seen everything
        self.shift = shift  # a different "version" ranks items rotated by `shift`
        self.empty_segments = empty_segments
        self.asked: list[list[int]] = []

    def ranking(self, user: int) -> list[int]:
        """The full ranking of a user, before excluding what they saw."""
        order = [(i + self.shift) % len(ITEMS) for i in range(len(ITEMS))]
        return order[::-1] if user == 20 else order

    def recommend_rows(self, rows: np.ndarray, n: int = 20, exclude_seen: bool = True) -> np.ndarray:
        self.asked.append(rows.tolist())
        out = np.full((len(rows), n), -1, np.int32)
        for k, row in enumerate(rows.tolist()):
            user = int(self.users[row])
            ranked = [i for i in self.ranking(user) if not (exclude_seen and i in self.seen.get(user, set()))]
            out[k, : len(ranked[:n])] = ranked[:n]
        return out

    def fallback(self, segment: int) -> list[str]:
        if segment in self.empty_segments:
            return []
        if segment == -1:
            return ITEMS[::-1]
        return ITEMS[segment : segment + 25]

    def params(self) -> dict:
        return {"shift": self.shift}


def ids(model: FakeModel, user: int) -> list[str]:
    """What the model should answer `user`: the ranking without seen items, top 20."""
    return [ITEMS[i] for i in model.ranking(user) if i not in model.seen.get(user, set())][:20]


@pytest.fixture
def model() -> FakeModel:
    return FakeModel()


@pytest.fixture
def table(model) -> AnswerTable:
    return AnswerTable.build(model, PROV, user_segments={10: 1, 30: 5, 99: 3, 98: -1}, batch=3)


@pytest.fixture
def client(table):
    with TestClient(create_app(table)) as c:
        yield c


@pytest.fixture
def tokens(tmp_path):
    return ensure_tokens(tmp_path / "state" / "access.tokens", "alice")


@pytest.fixture
def admin(client, tokens, tmp_path):
    """The admin app over `client`'s serving state, authenticated as alice; loads must stay inside tmp_path."""
    with TestClient(create_admin_app(client.app, tokens, tmp_path), headers=tokens.headers()) as c:
        yield c


@pytest.fixture(scope="module")
def shared_client():
    """One app for many hypothesis examples (function-scoped fixtures are not reset between them)."""
    table = AnswerTable.build(FakeModel(), PROV, user_segments={99: 3})
    with TestClient(create_app(table)) as c:
        yield c


def header(source: str, prov: Provenance = PROV, arm: str = "champion") -> str:
    p = prov
    return (
        f"{p.model_name}/{p.model_version}; snapshot={p.snapshot_id}; code={p.code_version}; source={source}; arm={arm}"
    )


def metric(client, line_start: str) -> float:
    """The value of the exposition line starting with `line_start` (0 if absent)."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# --- the body and the table -------------------------------------------------------------------
def test_body_is_exactly_the_contract(client, model) -> None:
    r = client.get("/recommend/10")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["x-model"] == header("model")
    text = r.content.decode()
    assert BODY.fullmatch(text) and " " not in text and "\n" not in text
    got = text.split(",")
    assert len(got) == len(set(got)) == 20
    assert got == ids(model, 10) and ITEMS[0] not in got and ITEMS[2] not in got  # seen items left out


def test_table_answers_each_user_from_its_own_row_in_batches(model, table) -> None:
    assert model.asked == [[0, 1, 2], [3]]  # batch=3: every row asked once, in order
    assert table.lookup(20) == (",".join(ids(model, 20)).encode(), "model")
    assert table.lookup(40) == (",".join(ITEMS[:20]).encode(), "model")
    assert len(table) == 3  # user 30's row was empty


def test_rows_with_repeats_or_padding_keep_distinct_ids_in_order() -> None:
    class Repeats(FakeModel):
        def recommend_rows(self, rows, n=20, exclude_seen=True):
            out = np.full((len(rows), n), -1, np.int32)
            out[:, :5] = [3, 1, 3, -1, 2]
            return out

    table = AnswerTable.build(Repeats(), PROV)
    assert table.lookup(10) == (b"movie+3+1993,movie+1+1991,movie+2+1992", "model")


def test_unknown_users_get_their_segment_else_global(client, model) -> None:
    r = client.get("/recommend/99")  # unknown to the model, segment 3
    assert (r.text, r.headers["x-model"]) == (",".join(ITEMS[3:23]), header("segment"))
    for user in (98, 12345):  # segment unknown (-1), or user unknown everywhere
        r = client.get(f"/recommend/{user}")
        assert (r.text, r.headers["x-model"]) == (",".join(ITEMS[::-1][:20]), header("global"))


def test_a_user_with_an_empty_model_row_falls_back(client) -> None:
    r = client.get("/recommend/30")  # saw everything; segment 5
    assert (r.text, r.headers["x-model"]) == (",".join(ITEMS[5:25]), header("segment"))
    assert metric(client, 'recommend_fallbacks_total{kind="empty_row"}') == 1


def test_a_segment_without_a_list_answers_global_and_says_so() -> None:
    table = AnswerTable.build(FakeModel(empty_segments=(3,)), PROV, user_segments={99: 3})
    assert table.lookup(99) == (",".join(ITEMS[::-1][:20]).encode(), "global")


def test_build_refuses_what_would_break_the_contract() -> None:
    class OutOfRange(FakeModel):
        def recommend_rows(self, rows, n=20, exclude_seen=True):
            return np.full((len(rows), n), len(ITEMS), np.int32)

    class NoGlobal(FakeModel):
        def fallback(self, segment):
            return []

    bad_slug = FakeModel()
    bad_slug.items = [*ITEMS[:-1], "Not A Slug"]
    with pytest.raises(ValueError, match=r"model 'fake': recommend_rows gave item indices outside -1\.\.29"):
        AnswerTable.build(OutOfRange(), PROV)
    with pytest.raises(ValueError, match="model 'fake': the global fallback list is empty"):
        AnswerTable.build(NoGlobal(), PROV)
    with pytest.raises(ValueError, match="movie id 'Not A Slug' is not a contract movie id"):
        AnswerTable.build(bad_slug, PROV)
    with pytest.raises(ValueError, match=r"n=21, expected 1\.\.20"):
        AnswerTable.build(FakeModel(), PROV, n=21)


def test_provenance_fields_must_fit_a_header() -> None:
    with pytest.raises(ValueError, match=r"Provenance.snapshot_id='a; b' must be"):
        Provenance("m", "1", "a; b", "c", "t")
    assert len(AnswerTable.build(FakeModel(), PROV).headers) == len(SOURCES) == 4  # model, segment, global, coldstart


# --- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("abc", "is not a positive integer"),
        ("-1", "is not a positive integer"),
        ("+1", "is not a positive integer"),
        ("01", "has a leading zero"),
        ("0", "is not positive"),
        ("1.5", "is not a positive integer"),
        ("1" * 19, "has 19 digits, at most 18"),
        ("", "is empty"),
        ("١٢", "is not a positive integer"),
        ("1 ", "is not a positive integer"),
        ("1/2", "is not a positive integer"),
    ],
)
def test_malformed_ids_are_400_naming_the_id_and_the_reason(client, raw, reason) -> None:
    before = metric(client, "recommend_bad_requests_total")
    r = client.get("/recommend/" + quote(raw, safe="/"))
    assert r.status_code == 400
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.text.startswith(f"user id {raw!r} {reason}")
    assert metric(client, "recommend_bad_requests_total") == before + 1


def test_parse_user_id_accepts_exactly_the_positive_ids() -> None:
    assert parse_user_id("1") == 1 and parse_user_id("9" * 18) == 10**18 - 1
    with pytest.raises(BadUserId, match=r"user id 'xxxxx.*\.\.\.' is not"):
        parse_user_id("x" * 100)  # long ids are shown cut


@settings(max_examples=300, deadline=None)
@given(
    segment=st.one_of(
        st.text(max_size=30), st.integers(-(10**20), 10**20).map(str), st.text(alphabet="0123456789+-. ", max_size=20)
    )
)
def test_any_path_segment_is_answered_never_5xx(shared_client, segment) -> None:
    r = shared_client.get("/recommend/" + quote(segment, safe=""))
    assert r.status_code in (200, 400, 404), r.text  # 404: the client normalised `.`/`..` away
    if r.status_code == 200:
        assert BODY.fullmatch(r.text) and r.headers["x-model"].startswith("fake/3; ")
    elif r.status_code == 400:
        assert r.text.startswith("user id ")


def test_other_methods_and_paths_are_not_5xx(client) -> None:
    assert client.post("/recommend/10").status_code == 405
    assert client.get("/recommend", follow_redirects=False).status_code == 307  # starlette adds the slash
    assert client.get("/recommend").text == "user id '' is empty"
    assert client.get("/nothing/here").status_code == 404


def test_unexpected_errors_answer_500_text_naming_the_route(model) -> None:
    class Broken(AnswerTable):
        def lookup(self, user_id):
            raise RuntimeError("boom")

    t = AnswerTable.build(model, PROV)
    broken = Broken(t.provenance, {}, (b"x",) * N_SEGMENTS, b"x", {})
    with TestClient(create_app(broken), raise_server_exceptions=False) as c:
        r = c.get("/recommend/10")
    assert (r.status_code, r.text) == (500, "internal error serving GET /recommend/10: RuntimeError")


# --- health and metrics -------------------------------------------------------------------------
def test_healthz_names_the_serving_table(client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "provenance": PROV.as_dict(), "draining": False}  # no folder, salt, arms


def test_metrics_count_answers_by_source_and_fallbacks_by_kind(client) -> None:
    text = client.get("/metrics").text
    for name, kind in (
        ("recommend_requests_total", "counter"),
        ("recommend_latency_seconds", "histogram"),
        ("recommend_fallbacks_total", "counter"),
        ("recommend_bad_requests_total", "counter"),
        ("model_info", "gauge"),
        ("model_swaps_total", "counter"),
    ):
        assert f"# TYPE {name} {kind}\n" in text
    assert 'model_info{arm="champion",code="abc123",model="fake",snapshot="snap-1",version="3"} 1.0' in text
    assert 'recommend_latency_seconds_bucket{arm="champion",le="0.00025"}' in text
    for path in ("/recommend/10", "/recommend/20", "/recommend/99", "/recommend/12345", "/recommend/x"):
        client.get(path)
    assert metric(client, 'recommend_requests_total{arm="champion",source="model"}') == 2
    assert metric(client, 'recommend_requests_total{arm="champion",source="segment"}') == 1
    assert metric(client, 'recommend_requests_total{arm="champion",source="global"}') == 1
    assert metric(client, 'recommend_fallbacks_total{kind="unknown_user"}') == 2
    assert metric(client, "recommend_bad_requests_total") == 1
    assert metric(client, 'recommend_latency_seconds_count{arm="champion"}') == 4


def test_each_app_has_its_own_registry(table) -> None:
    with TestClient(create_app(table)) as a, TestClient(create_app(table)) as b:
        a.get("/recommend/10")
        assert metric(a, 'recommend_latency_seconds_count{arm="champion"}') == 1
        assert metric(b, 'recommend_latency_seconds_count{arm="champion"}') == 0


# --- swapping -----------------------------------------------------------------------------------
def test_swap_replaces_the_table_and_the_model_info(client, model) -> None:
    new_prov = Provenance("fake", "4", "snap-2", "abc124", "2026-03-21T08:00:00")
    new = AnswerTable.build(FakeModel(shift=7), new_prov)
    old = swap(client.app, new)
    assert old.provenance == PROV
    r = client.get("/recommend/40")
    assert r.headers["x-model"] == header("model", new_prov) and r.text.startswith("movie+7+1997,")
    text = client.get("/metrics").text
    assert 'model_info{arm="champion",code="abc124",model="fake",snapshot="snap-2",version="4"} 1.0' in text
    assert 'version="3"' not in text
    assert metric(client, "model_swaps_total") == 1
    assert client.get("/healthz").json()["provenance"] == new_prov.as_dict()
    with pytest.raises(TypeError, match="the champion needs an AnswerTable, got NoneType"):
        swap(client.app, None)  # type: ignore[arg-type]


def test_swapping_under_concurrent_requests_never_fails_or_mixes_tables() -> None:
    provs = [Provenance("fake", str(v), f"snap-{v}", "abc", "2026-03-20T00:00:00") for v in (1, 2)]
    tables = [AnswerTable.build(FakeModel(shift=5 * v), p) for v, p in zip((0, 1), provs, strict=True)]
    champion = {t: {s: h.decode() + "; arm=champion" for s, h in t.headers.items()} for t in tables}
    expected = {(champion[t]["model"], t.lookup(u)[0].decode()) for t in tables for u in (10, 20, 40)}
    expected |= {(champion[t]["global"], t.lookup(12345)[0].decode()) for t in tables}
    seen: set[tuple[str, str]] = set()
    failures: list[str] = []
    stop = threading.Event()
    app = create_app(tables[0])

    with TestClient(app) as client:

        def hammer(user: int) -> None:
            while not stop.is_set():
                r = client.get(f"/recommend/{user}")
                answer = (r.headers.get("x-model", ""), r.text)
                if r.status_code != 200 or answer not in expected:
                    failures.append(f"{r.status_code} {answer}")
                seen.add(answer)
                answered.append(1)

        def served(count: int) -> None:
            """Wait until `count` more answers came back (bounded)."""
            target, deadline = len(answered) + count, time.monotonic() + 10
            while len(answered) < target and time.monotonic() < deadline:
                time.sleep(0.001)

        answered: list[int] = []
        threads = [threading.Thread(target=hammer, args=(u,)) for u in (10, 20, 40, 12345)]
        for t in threads:
            t.start()
        for k in range(20):
            served(20)  # every table serves a few requests, with requests in flight as it is swapped
            swap(app, tables[(k + 1) % 2])
        served(20)
        stop.set()
        for t in threads:
            t.join(timeout=10)
        assert metric(client, "model_swaps_total") == 20
    assert failures == []
    assert len(answered) >= 21 * 20
    assert {h for h, _ in seen} >= {champion[tables[0]]["model"], champion[tables[1]]["model"]}


# --- canary: champion and challenger ------------------------------------------------------------
PROV2 = Provenance("fake", "4", "snap-2", "abc124", "2026-03-21T08:00:00")
USERS = range(1001, 2001)  # unknown to the model: the arm shows in the header of every answer


@pytest.fixture
def canary(table):
    """An app with the fixture table as champion and a rotated model as challenger at share 0."""
    app = create_app(table)
    set_challenger(app, AnswerTable.build(FakeModel(shift=7), PROV2), share=0.0, salt=42)
    with TestClient(app) as c:
        yield c


def arms(client, users) -> dict[int, str]:
    """The arm named in each user's X-Model header (and the header's version agrees with the arm)."""
    out = {}
    for user in users:
        r = client.get(f"/recommend/{user}")
        assert r.status_code == 200
        arm = r.headers["x-model"].rsplit("; arm=", 1)[1]
        assert r.headers["x-model"].startswith("fake/4; " if arm == "challenger" else "fake/3; ")
        out[user] = arm
    return out


def test_share_zero_is_all_champion_and_share_one_all_challenger(canary) -> None:
    assert set(arms(canary, range(1, 301)).values()) == {"champion"}
    set_share(canary.app, 1.0)
    assert set(arms(canary, range(1, 301)).values()) == {"challenger"}
    r = canary.get("/recommend/40")  # a model user gets the challenger's own list
    assert (r.text, r.headers["x-model"]) == (",".join(ITEMS[7:27]), header("model", PROV2, "challenger"))


def test_share_routes_exactly_the_users_split_puts_in_the_challenger(canary) -> None:
    set_share(canary.app, 0.3)
    got = arms(canary, USERS)
    want = {u: "challenger" if traffic.in_challenger(u, 42, 0.3) else "champion" for u in USERS}
    assert got == want
    assert 0.25 < sum(a == "challenger" for a in got.values()) / len(USERS) < 0.35


def test_users_are_sticky_and_a_larger_share_keeps_the_challenger_users(canary) -> None:
    users = range(1001, 1401)
    set_share(canary.app, 0.1)
    first = arms(canary, users)
    assert arms(canary, users) == first  # asked again: same arm for everyone
    set_share(canary.app, 0.5)
    wider = arms(canary, users)
    assert all(wider[u] == "challenger" for u, a in first.items() if a == "challenger")
    assert sum(a == "challenger" for a in wider.values()) > 2 * sum(a == "challenger" for a in first.values())
    set_share(canary.app, 0.5, salt=7)  # a new experiment reshuffles
    assert arms(canary, users) != wider


def test_metrics_count_requests_and_latency_by_arm(canary) -> None:
    set_share(canary.app, 0.3)
    got = arms(canary, range(1001, 1201))
    n_ch = sum(a == "challenger" for a in got.values())
    assert 0 < n_ch < 200
    assert metric(canary, 'recommend_requests_total{arm="challenger",source="global"}') == n_ch
    assert metric(canary, 'recommend_requests_total{arm="champion",source="global"}') == 200 - n_ch
    assert metric(canary, 'recommend_latency_seconds_count{arm="challenger"}') == n_ch
    assert metric(canary, 'recommend_latency_seconds_count{arm="champion"}') == 200 - n_ch
    text = canary.get("/metrics").text
    assert 'model_info{arm="champion",code="abc123",model="fake",snapshot="snap-1",version="3"} 1.0' in text
    assert 'model_info{arm="challenger",code="abc124",model="fake",snapshot="snap-2",version="4"} 1.0' in text
    assert metric(canary, "recommend_challenger_share") == 0.3


def test_promote_makes_the_challenger_champion_for_everyone(canary) -> None:
    set_share(canary.app, 0.3)
    old = promote(canary.app)
    assert old.provenance == PROV
    assert serving(canary.app).challenger is None and serving(canary.app).share == 0.0
    assert {canary.get(f"/recommend/{u}").headers["x-model"] for u in range(1001, 1101)} == {
        header("global", PROV2, "champion")
    }
    text = canary.get("/metrics").text
    assert 'model_info{arm="champion",code="abc124",model="fake",snapshot="snap-2",version="4"} 1.0' in text
    assert 'version="3"' not in text and 'arm="challenger",code' not in text
    assert metric(canary, "model_swaps_total") == 2  # the challenger swapped in, then promoted
    with pytest.raises(NoChallenger, match="nothing to promote"):
        promote(canary.app)


def test_drop_sends_everyone_back_to_the_champion(canary) -> None:
    set_share(canary.app, 1.0)
    assert drop_challenger(canary.app).provenance == PROV2
    assert set(arms(canary, range(1, 101)).values()) == {"champion"}
    with pytest.raises(NoChallenger, match="nothing to drop"):
        drop_challenger(canary.app)
    with pytest.raises(NoChallenger, match="load one before setting its share"):
        set_share(canary.app, 0.5)
    with pytest.raises(ValueError, match="challenger share 1.5 must be between 0 and 1"):
        set_share(canary.app, 1.5)


def test_a_champion_swap_keeps_the_challenger_and_its_share(canary) -> None:
    set_share(canary.app, 0.3)
    swap(canary.app, AnswerTable.build(FakeModel(shift=3), Provenance("fake", "5", "s", "c", "t")))
    s = serving(canary.app)
    assert (s.share, s.salt, s.challenger.table.provenance) == (0.3, 42, PROV2)
    assert {h.split(";")[0] for h in (canary.get(f"/recommend/{u}").headers["x-model"] for u in USERS)} == {
        "fake/5",
        "fake/4",
    }


# --- admin endpoints ----------------------------------------------------------------------------
def save_version(folder: Path, version: str, seed: int) -> Path:
    """A real saved popularity version (arrays + manifest) over users 1..60 and the test items."""
    rng = np.random.default_rng(seed)
    n = 400
    data = TrainingData.from_triples(
        rng.integers(1, 61, n),
        rng.choice(ITEMS, n),
        np.ones(n),
        np.zeros(n),
        np.zeros(n),
        snapshot_id=f"snap-{version}",
    )
    create("popularity").fit(data).save(folder)
    manifest = {
        "model": "popularity",
        "version": version,
        "snapshot_id": f"snap-{version}",
        "code_version": "abc123",
        "trained_at": "2026-03-20T08:00:00",
        "params": {},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def version(tmp_path) -> Path:
    return save_version(tmp_path / "v0007", "v0007", seed=7)


def test_admin_loads_a_challenger_sets_its_share_and_promotes_it(client, admin, version) -> None:
    r = admin.post("/admin/load", json={"folder": str(version), "arm": "challenger", "share": 0.5, "salt": 3})
    assert r.status_code == 200, r.text
    state = r.json()
    assert state["challenger"]["provenance"]["model_version"] == "v0007"
    assert state["challenger"]["folder"] == str(version)
    assert (state["share"], state["salt"], state["loaded"], state["loading"]) == (0.5, 3, "challenger", None)
    assert admin.get("/admin/state").json()["champion"]["provenance"] == PROV.as_dict()
    seen = {client.get(f"/recommend/{u}").headers["x-model"].split("; ")[0] for u in range(1, 101)}
    assert seen == {"fake/3", "popularity/v0007"}
    assert admin.post("/admin/share", json={"share": 1}).json()["share"] == 1
    assert {client.get(f"/recommend/{u}").headers["x-model"].split("; ")[0] for u in range(1, 51)} == {
        "popularity/v0007"
    }
    state = admin.post("/admin/promote").json()
    assert state["champion"]["provenance"]["model_version"] == "v0007" and state["challenger"] is None
    assert client.get("/healthz").json()["provenance"]["model_version"] == "v0007"


def test_admin_load_as_champion_and_drop(client, admin, version) -> None:
    r = admin.post("/admin/load", json={"folder": str(version)})
    assert r.status_code == 200 and r.json()["champion"]["provenance"]["model_version"] == "v0007"
    assert client.get("/recommend/5").headers["x-model"].startswith("popularity/v0007; ")
    assert admin.post("/admin/load", json={"folder": str(version), "arm": "challenger"}).json()["share"] == 0
    assert admin.post("/admin/drop").json()["challenger"] is None


def test_admin_load_uses_the_segments_file_next_to_the_artifact(client, admin, version) -> None:
    write_segments(version / "segments.json", {5000: 3})
    assert admin.post("/admin/load", json={"folder": str(version)}).json()["champion"]["segment_users"] == 1
    assert client.get("/recommend/5000").headers["x-model"].endswith("; source=segment; arm=champion")
    arrow = write_segments(version.parent / "segs.arrow", {5000: 3, 5001: -1, 5002: 13})
    assert read_segments(arrow) == {5000: 3, 5001: -1, 5002: 13}
    r = admin.post("/admin/load", json={"folder": str(version), "segments": str(arrow)})
    assert r.json()["champion"]["segment_users"] == 2  # -1: segment unknown, the global list


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/admin/load", b"{", 400, "bad request body: body: Invalid JSON"),
        ("/admin/load", b"[1]", 400, "bad request body: body: Input should be an object"),
        ("/admin/load", b"[" * 1000, 400, "bad request body: body: Invalid JSON: recursion limit exceeded"),
        ("/admin/load", b"{}", 400, "folder: Field required"),
        ("/admin/load", b'{"folder": null}', 400, "folder: Input should be a valid string"),
        ("/admin/load", b'{"folder": 5}', 400, "folder: Input should be a valid string"),
        ("/admin/load", b'{"folder": "' + b"a" * 256 + b'"}', 404, "no version folder there"),
        ("/admin/load", b'{"folder": "' + b"a" * 2000 + b'"}', 400, "folder: String should have at most 1024"),
        ("/admin/load", b'{"folder": "VERSION\\u0000"}', 400, "folder must lie inside the artifacts root"),
        ("/admin/load", b'{"folder": "x", "colour": 1}', 400, "colour: Extra inputs are not permitted"),
        (
            "/admin/load",
            b'{"folder": "VERSION", "arm": "canary"}',
            400,
            "arm: Input should be 'champion' or 'challenger'",
        ),
        ("/admin/load", b'{"folder": "VERSION", "share": 0.5}', 400, "share and salt apply to a challenger only"),
        (
            "/admin/load",
            b'{"folder": "VERSION", "arm": "challenger", "share": 2}',
            400,
            "share: Input should be less than or equal to 1",
        ),
        (
            "/admin/load",
            b'{"folder": "VERSION", "arm": "challenger", "salt": -1}',
            400,
            "salt: Input should be greater than or equal to 0",
        ),
        (
            "/admin/load",
            b'{"folder": "VERSION", "arm": "challenger", "share": true}',
            400,
            "share: Input should be a valid",
        ),
        ("/admin/load", b'{"folder": "VERSION", "drain": 1}', 400, "drain: Input should be a valid boolean"),
        ("/admin/load", b'{"folder": "/nonexistent/v1"}', 400, "folder must lie inside the artifacts root"),
        ("/admin/load", b'{"folder": "../../../../tmp/x"}', 400, "folder must lie inside the artifacts root"),
        ("/admin/load", b'{"folder": "EMPTY"}', 400, "cannot load that version as champion: its files are missing or"),
        ("/admin/load", b'{"folder": "VERSION", "segments": "NOSEGS"}', 400, "cannot load that version as champion"),
        (
            "/admin/load",
            b'{"folder": "VERSION", "segments": "/etc/hostname"}',
            400,
            "segments must lie inside the artifacts root",
        ),
        ("/admin/share", b'{"share": 0.5}', 409, "no challenger is loaded"),
        ("/admin/share", b'{"share": "half"}', 400, "share: Input should be a valid number"),
        ("/admin/promote", b"", 409, "nothing to promote"),
        ("/admin/promote", b'{"now": 1}', 400, "now: Extra inputs are not permitted"),
        ("/admin/drop", b"", 409, "nothing to drop"),
        ("/admin/reboot", b"", 404, "no such admin endpoint"),
    ],
)
def test_admin_bad_input_is_4xx_json_naming_the_reason(
    client, admin, version, tmp_path, path, body, status, message
) -> None:
    (tmp_path / "empty").mkdir()
    body = body.replace(b"VERSION", str(version).encode()).replace(b"EMPTY", str(tmp_path / "empty").encode())
    body = body.replace(b"NOSEGS", str(tmp_path / "none.json").encode())
    r = admin.post(path, content=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert "Errno" not in r.text and str(tmp_path) not in r.text  # nothing about the disk
    assert serving(client.app).champion.table.provenance == PROV  # nothing changed


def test_admin_load_of_a_broken_artifact_is_400_and_keeps_serving(client, admin, version) -> None:
    good = (version / "model.json").read_text()
    (version / "model.json").write_text("{not json")
    r = admin.post("/admin/load", json={"folder": str(version)})
    assert r.status_code == 400 and "its files are missing or invalid" in r.json()["error"]
    (version / "model.json").write_text(good)
    (version / "manifest.json").write_text(json.dumps({"model": "popularity"}))
    r = admin.post("/admin/load", json={"folder": str(version)})
    assert r.status_code == 400 and "its files are missing or invalid" in r.json()["error"]
    assert client.get("/recommend/10").headers["x-model"] == header("model")


def test_a_draining_replica_answers_503_with_the_reason_until_it_serves_again(client, admin) -> None:
    drain(client.app, "loading v0008")
    r = client.get("/recommend/10")
    assert (r.status_code, r.headers["retry-after"]) == (503, "1")
    assert r.text == "this replica does not answer right now: loading v0008" and "x-model" not in r.headers
    assert client.get("/healthz").json()["draining"] is True
    assert admin.get("/admin/state").json()["draining"] is True
    assert client.get("/recommend/abc").status_code == 400  # a bad id stays a bad id
    drain(client.app, None)
    r = client.get("/recommend/10")
    assert r.status_code == 200 and r.headers["x-model"] == header("model")
    assert client.get("/healthz").json()["draining"] is False


@pytest.mark.parametrize("fails", [False, True])
def test_a_load_with_drain_answers_503_while_it_builds_then_serves(client, admin, version, monkeypatch, fails) -> None:
    seen: list[tuple[int, bool]] = []
    real = load_version

    def load_and_look(folder, segments=None):
        # runs in the worker thread while the event loop keeps answering
        r = client.get("/recommend/10")
        seen.append((r.status_code, client.get("/healthz").json()["draining"]))
        if fails:
            raise OSError("disk gone")
        return real(folder, segments)

    monkeypatch.setattr(admin_routes, "load_version", load_and_look)
    r = admin.post("/admin/load", json={"folder": str(version), "drain": True})
    assert seen == [(503, True)]
    assert r.status_code == (400 if fails else 200), r.text
    served = client.get("/recommend/10")
    assert served.status_code == 200 and admin.get("/admin/state").json()["draining"] is False
    assert served.headers["x-model"].startswith("fake/3; " if fails else "popularity/v0007; ")


def test_a_load_without_drain_keeps_answering_from_the_old_table(client, admin, version, monkeypatch) -> None:
    seen: list[str] = []
    real = load_version

    def load_and_look(folder, segments=None):
        seen.append(client.get("/recommend/10").headers["x-model"])
        return real(folder, segments)

    monkeypatch.setattr(admin_routes, "load_version", load_and_look)
    assert admin.post("/admin/load", json={"folder": str(version)}).status_code == 200
    assert seen == [header("model")]


def test_admin_refuses_a_second_load_and_proxied_requests(client, admin, version) -> None:
    client.app.state.loading = "champion"  # as while a load builds its table in a worker thread
    r = admin.post("/admin/load", json={"folder": str(version)})
    assert (r.status_code, r.json()["error"]) == (409, "a champion load is in progress; retry when it is done")
    client.app.state.loading = None
    r = admin.get("/admin/state", headers={"X-Movielab-Proxy": "1"})
    assert r.status_code == 403 and "not served through the proxy" in r.json()["error"]
    r = admin.get("/admin/load")
    assert (r.status_code, r.json()["error"]) == (405, "GET /admin/load: use POST")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{}", None),
        ("[1]", "expected a JSON object"),
        ('{"x": 1}', "user id 'x' is not"),
        ('{"5": 14}', "segment 14 of user 5"),
        ('{"5": "3"}', "segment '3' of user 5"),
    ],
)
def test_read_segments_names_the_file_and_the_reason(tmp_path, text, reason) -> None:
    path = tmp_path / "segments.json"
    path.write_text(text)
    if reason is None:
        assert read_segments(path) == {}
    else:
        with pytest.raises(BadSegments, match=re.escape(f"segments file {path}: ") + ".*" + re.escape(reason)):
            read_segments(path)


def test_explain_tells_the_arm_source_and_manifest(client, admin, version) -> None:
    admin.post("/admin/load", json={"folder": str(version), "arm": "challenger", "share": 1})
    e = admin.get("/explain/5").json()
    assert (e["user"], e["arm"], e["source"], e["folder"]) == (5, "challenger", "model", str(version))
    assert e["manifest"]["version"] == "v0007" and e["provenance"]["model_version"] == "v0007"
    assert ",".join(e["answer"]) == client.get("/recommend/5").text
    assert e["header"] == client.get("/recommend/5").headers["x-model"]
    assert e["bucket"] == traffic.bucket(5, 0) and e["threshold"] == traffic.BUCKETS
    assert e["explain_error"] == "KeyError: 'snapshot_hash'"  # this manifest has no lineage fields
    manifest = json.loads((version / "manifest.json").read_text())
    manifest.update(snapshot_hash="h", window=[None, None], snapshot_rows=400)
    (version / "manifest.json").write_text(json.dumps(manifest))
    admin.post("/admin/load", json={"folder": str(version), "arm": "challenger", "share": 1})
    e = admin.get("/explain/5").json()
    assert e["explain"]["recommendations"] == e["answer"] and e["explain"]["model"]["version"] == "v0007"
    admin.post("/admin/drop")
    e = admin.get("/explain/12345").json()
    assert (e["arm"], e["source"], e["manifest"]) == ("champion", "global", None)
    assert "does not know this user" in e["reason"]
    r = admin.get("/explain/abc")
    assert r.status_code == 400 and r.json()["error"].startswith("user id 'abc' is not")


# --- attacks on the admin side (issue 10, part 3) ------------------------------------------------
ADMIN_ROUTES = [
    ("POST", "/admin/load"),
    ("POST", "/admin/share"),
    ("POST", "/admin/promote"),
    ("POST", "/admin/drop"),
    ("GET", "/admin/state"),
    ("GET", "/explain/5"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_the_public_app_has_no_admin_or_explain_route_even_with_a_token(client, tokens, method, path) -> None:
    body = {"folder": "../../../../tmp/x", "arm": "challenger", "share": 1.0, "drain": True}
    for headers in ({}, tokens.headers()):
        r = client.request(method, path, json=body if method == "POST" else None, headers=headers)
        assert r.status_code in (404, 405), (path, r.status_code, r.text)
    assert client.get("/recommend/10").status_code == 200  # a drain request did not drain


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_and_explain_need_a_valid_token(client, tokens, tmp_path, method, path) -> None:
    app = create_admin_app(client.app, tokens, tmp_path)
    with TestClient(app) as anon:
        for headers in (
            {},
            {"authorization": "Bearer " + "x" * 43},
            {"authorization": tokens.token()},
            {"authorization": "Basic " + tokens.token()},
        ):
            r = anon.request(
                method, path, json={"folder": "v", "drain": True} if method == "POST" else None, headers=headers
            )
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), (headers, r.text)
            assert "provenance" not in r.text and "bucket" not in r.text
    assert serving(client.app).draining is None


def test_a_traversal_folder_is_refused_and_never_served(client, admin, tmp_path) -> None:
    outside = save_version(tmp_path.parent / f"{tmp_path.name}-outside", "v0666", seed=6)
    for folder in (str(outside), f"../{outside.name}", f"v0007/../../{outside.name}"):
        r = admin.post("/admin/load", json={"folder": folder, "arm": "challenger", "share": 1.0})
        assert (r.status_code, r.json()["error"]) == (400, "folder must lie inside the artifacts root")
    assert admin.post("/admin/promote").status_code == 409  # nothing was loaded
    assert client.get("/recommend/10").headers["x-model"] == header("model")


def test_segments_pointing_at_any_json_file_reveal_neither_its_content_nor_its_existence(
    admin, version, tmp_path
) -> None:
    (tmp_path / "secret.json").write_text(json.dumps({"top-secret-key": "x"}))
    answers = set()
    for segments in ("secret.json", "missing.json"):  # one exists, one does not: the same answer
        r = admin.post("/admin/load", json={"folder": str(version), "segments": segments})
        assert r.status_code == 400 and "top-secret-key" not in r.text and "Errno" not in r.text
        answers.add(r.text)
    assert len(answers) == 1


def test_the_admin_log_names_the_authenticated_identity(admin, version, caplog) -> None:
    with caplog.at_level("INFO", logger="movielab.recommender.serving.admin"):
        assert admin.post("/admin/load", json={"folder": "v0007", "arm": "challenger"}).status_code == 200
        assert admin.post("/admin/drop").status_code == 200
    assert "admin load of" in caplog.text and "as challenger by alice" in caplog.text
    assert "admin drop by alice" in caplog.text


def test_several_roots_each_allow_loads_and_nothing_outside_them(client, tokens, tmp_path) -> None:
    cache = save_version(tmp_path / "cache" / "version-3", "v0003", seed=3)
    other = save_version(tmp_path / "other" / "v0004", "v0004", seed=4)
    app = create_admin_app(client.app, tokens, [tmp_path / "models", tmp_path / "cache"])
    with TestClient(app, headers=tokens.headers()) as admin:
        assert admin.post("/admin/load", json={"folder": str(cache)}).status_code == 200
        r = admin.post("/admin/load", json={"folder": str(other)})
        assert (r.status_code, r.json()["error"]) == (400, "folder must lie inside the artifacts root")
    with pytest.raises(ValueError, match="at least one artifacts root"):
        create_admin_app(client.app, tokens, [])


def test_admin_coldstart_serves_new_users_lists_and_refuses_bad_ones(client, admin) -> None:
    entry = {"user_id": 12345, "movies": ["scream+1996", "fargo+1996"], "matcher": "lexical-v1", "fallback": "global"}
    known = next(u for u in range(2, 50) if "source=model" in client.get(f"/recommend/{u}").headers["x-model"])
    model_user = {**entry, "user_id": known, "movies": ["heat+1995"]}
    r = admin.post("/admin/coldstart", json={"lists": [entry, model_user]})
    assert r.status_code == 200 and r.json() == {"set": 2, "coldstart_users": 2}
    got = client.get("/recommend/12345")
    assert got.text == "scream+1996,fargo+1996" and "source=coldstart" in got.headers["x-model"]
    assert "matcher=lexical-v1" in got.headers["x-model"]
    assert client.get(f"/recommend/{known}").text != "heat+1995"  # a user the model knows gets the model's answer
    bad = [
        ({"lists": []}, "lists"),
        ({"lists": [{**entry, "movies": ["has space"]}]}, "outside the contract"),
        ({"lists": [{**entry, "matcher": "a;b"}]}, "header token"),
        ({"lists": [{**entry, "extra": 1}]}, "extra"),
        ({"lists": [entry] * 501}, "lists"),
    ]
    for body, reason in bad:
        r = admin.post("/admin/coldstart", json=body)
        assert r.status_code == 400 and reason in r.json()["error"], (body, r.text)
    assert client.get("/recommend/12345").text == "scream+1996,fargo+1996"  # refused bodies changed nothing
    wrong = {"authorization": "Bearer " + "x" * 40}
    assert admin.post("/admin/coldstart", json={"lists": [entry]}, headers=wrong).status_code == 401
