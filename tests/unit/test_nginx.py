"""The generated nginx config: upstream, down markers, time-outs, keep-alive, admin kept private; checks by the
real nginx."""

from __future__ import annotations

import re

import pytest

from movielab.recommender.errors import NginxError
from movielab.recommender.serving.nginx import (
    CLIENT_KEEPALIVE_S,
    REPLICA_KEEPALIVE_S,
    UPSTREAM_KEEPALIVE_S,
    Backend,
    Nginx,
    Timeouts,
    find_nginx,
    render_config,
)

BACKENDS = [Backend("127.0.0.1", 9001), Backend("127.0.0.1", 9002, down=True)]
needs_nginx = pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (apt-get install nginx-light)")


def test_config_proxies_to_every_replica_with_keepalive_and_down_markers(tmp_path) -> None:
    text = render_config(tmp_path, 8082, BACKENDS)
    upstream = re.search(r"upstream replicas \{(.*?)\}", text, re.DOTALL).group(1)
    lines = [line.strip() for line in upstream.strip().splitlines()]
    assert lines == [
        "server 127.0.0.1:9001 max_fails=1 fail_timeout=1s;",
        "server 127.0.0.1:9002 max_fails=1 fail_timeout=1s down;",
        "server 127.0.0.1:9001 backup max_fails=1 fail_timeout=1s;",  # never "no live upstreams"
        "keepalive 64;",
        f"keepalive_timeout {UPSTREAM_KEEPALIVE_S}s;",
        "keepalive_requests 1000000;",
    ]
    assert "listen 127.0.0.1:8082 backlog=4096;" in text
    assert f"access_log {tmp_path.resolve() / 'failed.log'} movielab if=$movielab_failed;" in text
    assert "daemon off;" in text
    assert f"pid {tmp_path.resolve() / 'nginx.pid'};" in text
    assert text.count("proxy_next_upstream error timeout http_502 http_503;") == 2  # /recommend/ and /healthz
    assert text.count("proxy_next_upstream_tries 3;") == 2  # a draining replica's two entries, then the other
    assert text.count('proxy_set_header Connection "";') == 2  # keep-alive to the replicas


def test_nginx_is_never_first_to_close_a_kept_alive_connection_that_may_carry_a_request(tmp_path) -> None:
    text = render_config(tmp_path, 8082, BACKENDS)
    http = text.split("upstream replicas")[0]
    # clients: any number of requests per connection, and longer idle than the world's client keeps one (15 s)
    assert f"keepalive_timeout {CLIENT_KEEPALIVE_S}s;" in http and "keepalive_requests 1000000;" in http
    assert CLIENT_KEEPALIVE_S > 15
    # replicas: nginx drops an idle upstream connection before uvicorn would close it under nginx's next request
    assert UPSTREAM_KEEPALIVE_S < REPLICA_KEEPALIVE_S


def test_time_outs_stay_below_the_worlds_600_ms(tmp_path) -> None:
    text = render_config(tmp_path, 8082, BACKENDS, timeouts=Timeouts(connect_ms=20, read_ms=300, total_ms=500))
    assert "proxy_connect_timeout 20ms;" in text and "proxy_read_timeout 300ms;" in text
    assert "proxy_next_upstream_timeout 500ms;" in text
    assert "max_fails=1 fail_timeout=3s;" in render_config(tmp_path, 8082, BACKENDS, timeouts=Timeouts(fail_s=3))
    with pytest.raises(ValueError, match="fail_s must be a whole number of seconds"):
        Timeouts(fail_s=0)
    with pytest.raises(ValueError, match="need 0 < connect <= read < total < 600 ms"):
        Timeouts(read_ms=700, total_ms=800)
    with pytest.raises(ValueError, match="need 0 < connect <= read < total"):
        Timeouts(connect_ms=300, read_ms=200)


def test_admin_and_everything_else_are_not_proxied(tmp_path) -> None:
    text = render_config(tmp_path, 8082, BACKENDS)
    proxied = re.findall(r"location (\S+(?: \S+)?) \{\s*proxy_pass", text)
    assert proxied == ["/recommend/", "= /healthz"]
    assert re.search(r"location /admin \{\s*return 403 ", text)
    assert re.search(r"location / \{\s*return 404 ", text)


@pytest.mark.parametrize(
    ("backends", "port", "message"),
    [
        ([], 8082, "no replicas to proxy to"),
        ([Backend("127.0.0.1", 9001, down=True)], 8082, "every replica is drained"),
        ([Backend("127.0.0.1", 9001), Backend("127.0.0.1", 9001)], 8082, "replicas repeat"),
        ([Backend("127.0.0.1", 70000)], 8082, "port 70000 of 127.0.0.1 is not in 1..65535"),
        (BACKENDS, 0, "port 0 of 127.0.0.1 is not in 1..65535"),
    ],
)
def test_configs_nginx_cannot_serve_are_refused(tmp_path, backends, port, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        render_config(tmp_path, port, backends)


@needs_nginx
def test_the_real_nginx_accepts_the_generated_config(tmp_path) -> None:
    n = Nginx(tmp_path, 8082, BACKENDS)
    n.write_config()  # runs `nginx -t` on it before installing it
    assert n.config_path.read_text() == render_config(tmp_path, 8082, BACKENDS)


@needs_nginx
def test_a_config_nginx_refuses_is_an_error_naming_the_reason_and_the_old_one_stays(tmp_path) -> None:
    n = Nginx(tmp_path, 8082, BACKENDS)
    n.write_config()
    good = n.config_path.read_text()
    n.host = "not a host name"
    with pytest.raises(NginxError, match=r"nginx refused the config .*nginx.conf.new: .*\[emerg\].*host not found"):
        n.write_config()
    assert n.config_path.read_text() == good and n.backends == BACKENDS


@needs_nginx
def test_reload_needs_a_running_nginx(tmp_path) -> None:
    n = Nginx(tmp_path, 8082, BACKENDS)
    with pytest.raises(NginxError, match="nginx on port 8082 is not running"):
        n.reload()


def test_a_missing_binary_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(NginxError, match=f"nginx binary {tmp_path / 'no-nginx'} is not an executable file"):
        Nginx(tmp_path, 8082, BACKENDS, binary=str(tmp_path / "no-nginx"))


@needs_nginx
def test_a_port_another_process_answers_on_is_not_mistaken_for_a_started_nginx(tmp_path) -> None:
    import socket

    with socket.socket() as other:  # accepts connections, as a stale nginx of another folder would
        other.bind(("127.0.0.1", 0))
        other.listen(16)
        n = Nginx(tmp_path, other.getsockname()[1], BACKENDS[:1])
        with pytest.raises(NginxError, match=r"did not start within 5 s: .*bind\(\) to 127\.0\.0\.1:\d+ failed"):
            n.start(timeout=5)
    assert n.pid is None and n.proc is None
