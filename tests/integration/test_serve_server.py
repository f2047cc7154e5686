"""The recommendation service under a real uvicorn server: the contract over HTTP, the world's client, live swaps."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from movielab.auth import ensure_tokens
from movielab.recommender.serving import traffic
from movielab.recommender.serving.admin import create_admin_app
from movielab.recommender.serving.answers import AnswerTable
from movielab.recommender.serving.app import create_app
from movielab.recommender.serving.state import drop_challenger, serving, set_challenger, swap
from movielab.recommender.training.provenance import Provenance
from movielab.webserver import ServerThread
from movielab.world.client import HttpRecommender, Team

pytestmark = pytest.mark.integration

USERS = np.arange(1, 301, dtype=np.int64)


class ShuffledModel:
    """A fake model over real catalog ids: a seeded random top-n per user; the catalog order as fallback."""

    def __init__(self, items: list[str], seed: int) -> None:
        self.name = "shuffled"
        self.users = USERS
        self.items = items
        self.seed = seed

    def recommend_rows(self, rows: np.ndarray, n: int = 20, exclude_seen: bool = True) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        ranks = np.argsort(rng.random((len(self.users), len(self.items))), axis=1)[:, :n]
        return ranks[rows].astype(np.int32)

    def fallback(self, segment: int) -> list[str]:
        return self.items[self.seed + segment + 1 :]

    def params(self) -> dict:
        return {"seed": self.seed}


def make_table(items: list[str], version: int) -> AnswerTable:
    prov = Provenance("shuffled", str(version), f"snap-{version}", "deadbeef", "2026-03-20T08:12:38")
    return AnswerTable.build(ShuffledModel(items, seed=version), prov, user_segments={1000: 4})


@pytest.fixture(scope="module")
def items(universe) -> list[str]:
    return list(universe.catalog.slug[:300])


@pytest.fixture(scope="module")
def tables(items) -> list[AnswerTable]:
    return [make_table(items, 1), make_table(items, 2)]


@pytest.fixture(scope="module")
def server(tables, tmp_path_factory):
    """A server over tables[0], its admin app on a second loopback listener (`s.admin`, token in
    `s.headers`); tests that swap put tables[0] back."""
    app = create_app(tables[0])
    tokens = ensure_tokens(tmp_path_factory.mktemp("state") / "access.tokens")
    with ServerThread(app) as s, ServerThread(create_admin_app(app, tokens, tmp_path_factory.getbasetemp())) as a:
        s.app, s.admin, s.headers = app, a, tokens.headers()
        yield s


def test_answers_follow_the_contract_over_http(server, tables) -> None:
    with httpx.Client(base_url=server.url) as http:
        r = http.get("/recommend/7")
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert r.headers["x-model"] == "shuffled/1; snapshot=snap-1; code=deadbeef; source=model; arm=champion"
        assert r.content == tables[0].lookup(7)[0]
        ids = r.text.split(",")
        assert len(ids) == len(set(ids)) == 20 and all(" " not in i and "\n" not in i for i in ids)
        assert http.get("/recommend/1000").headers["x-model"].endswith("; source=segment; arm=champion")
        assert http.get("/recommend/999999999999999999").headers["x-model"].endswith("; source=global; arm=champion")
        head = http.head("/recommend/7")
        assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", str(len(r.content)))


@pytest.mark.parametrize(
    ("raw_path", "shown"),
    [
        ("/recommend/abc", "'abc'"),
        ("/recommend/-5", "'-5'"),
        ("/recommend/007", "'007'"),
        ("/recommend/%D9%A1%D9%A2", "'١٢'"),
        ("/recommend/%FF", "'\ufffd'"),
        ("/recommend/%00", r"'\x00'"),
        ("/recommend/" + "9" * 5000, "'" + "9" * 40 + "...'"),
    ],
)
def test_bad_ids_are_400_naming_them_over_http(server, raw_path, shown) -> None:
    with httpx.Client(base_url=server.url) as http:
        r = http.get(httpx.URL(server.url + raw_path))
    assert r.status_code == 400
    assert r.text.startswith(f"user id {shown} ")


def test_the_worlds_client_accepts_every_answer(server, tables, universe) -> None:
    index = {slug: i for i, slug in enumerate(universe.catalog.slug)}
    users = np.concatenate([USERS, [1000, 5000, 123456789]])
    with HttpRecommender(
        [Team.parse(1, server.url)], index, timeout_ms=5000
    ) as client:  # a loaded machine must not time out
        answers = client.recommend(users, np.zeros(len(users)))
    assert answers.status.tolist() == [200] * len(users), answers.result[:3]
    for k, user in enumerate(users.tolist()):
        body = tables[0].lookup(user)[0].decode()
        assert answers.result[k] == body.replace(",", ", ")
        assert [universe.catalog.slug[i] for i in answers.movies[k]] == body.split(",")


def test_metrics_scrape_parses_and_counts(server) -> None:
    with httpx.Client(base_url=server.url) as http:
        before = _samples(http.get("/metrics").text)
        for path in ("/recommend/3", "/recommend/1000", "/recommend/x"):
            http.get(path)
        r = http.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = _samples(r.text)
    key = ("recommend_requests_total", (("arm", "champion"), ("source", "model")))
    assert after[key] == before.get(key, 0) + 1
    assert after[("recommend_bad_requests_total", ())] == before[("recommend_bad_requests_total", ())] + 1
    assert (
        after[
            (
                "model_info",
                (
                    ("arm", "champion"),
                    ("code", "deadbeef"),
                    ("model", "shuffled"),
                    ("snapshot", "snap-1"),
                    ("version", "1"),
                ),
            )
        ]
        == 1
    )


def _samples(text: str) -> dict[tuple, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_swapping_while_clients_hammer_the_server(server, tables) -> None:
    allowed = {
        (t.headers[t.lookup(u)[1]].decode() + "; arm=champion", t.lookup(u)[0])
        for t in tables
        for u in (5, 77, 1000, 4242)
    }
    stop = threading.Event()
    failures: list[str] = []
    answered: list[str] = []

    def hammer(user: int) -> None:
        with httpx.Client(base_url=server.url, timeout=5) as http:
            while not stop.is_set():
                try:
                    r = http.get(f"/recommend/{user}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if r.status_code != 200 or (r.headers.get("x-model"), r.content) not in allowed:
                    failures.append(f"{r.status_code} {r.headers.get('x-model')} {r.text[:60]}")
                answered.append(r.headers.get("x-model", ""))

    threads = [threading.Thread(target=hammer, args=(u,)) for u in (5, 77, 1000, 4242)]
    for t in threads:
        t.start()
    try:
        for k in range(20):
            target, deadline = len(answered) + 20, time.monotonic() + 10
            while len(answered) < target and time.monotonic() < deadline:
                time.sleep(0.001)
            swap(server.app, tables[(k + 1) % 2])  # from this thread, while the server's loop answers
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        swap(server.app, tables[0])
    assert failures == []
    assert len(answered) >= 400
    assert {a.split(";")[0] for a in answered} == {"shuffled/1", "shuffled/2"}


def test_canary_split_over_http_with_the_worlds_client(server, tables, universe) -> None:
    set_challenger(server.app, tables[1], share=0.4, salt=9)
    try:
        index = {slug: i for i, slug in enumerate(universe.catalog.slug)}
        with HttpRecommender(
            [Team.parse(1, server.url)], index, timeout_ms=5000
        ) as client:  # a loaded machine must not time out
            answers = client.recommend(USERS, np.zeros(len(USERS)))
        assert answers.status.tolist() == [200] * len(USERS)
        for k, user in enumerate(USERS.tolist()):  # each user's answer comes from the arm split puts them in
            table = tables[1] if traffic.in_challenger(user, 9, 0.4) else tables[0]
            assert answers.result[k] == table.lookup(user)[0].decode().replace(",", ", ")
        with (
            httpx.Client(base_url=server.url) as http,
            httpx.Client(base_url=server.admin.url, headers=server.headers) as admin,
        ):
            assert http.get("/admin/state").status_code == 404 and http.get("/explain/1").status_code == 404
            state = admin.get("/admin/state").json()
            assert (state["share"], state["salt"], state["challenger"]["provenance"]["model_version"]) == (0.4, 9, "2")
            user = next(u for u in USERS.tolist() if traffic.in_challenger(u, 9, 0.4))
            r = http.get(f"/recommend/{user}")
            assert r.headers["x-model"] == "shuffled/2; snapshot=snap-2; code=deadbeef; source=model; arm=challenger"
            e = admin.get(f"/explain/{user}").json()
            assert (e["arm"], e["source"], e["header"]) == ("challenger", "model", r.headers["x-model"])
            assert admin.post("/admin/share", json={"share": 1.5}).status_code == 400
            assert httpx.post(f"{server.admin.url}/admin/drop").status_code == 401
            assert admin.post("/admin/drop").json()["challenger"] is None
            assert admin.post("/admin/drop").status_code == 409
    finally:
        if serving(server.app).challenger is not None:
            drop_challenger(server.app)
