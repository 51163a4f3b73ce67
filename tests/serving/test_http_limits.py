"""serving.http_limits against a real uvicorn server (uvloop + httptools) in a subprocess.

The server is started the way BentoML's worker starts it: a listening socket's fd is handed to the
process, ``install(...)`` runs, then ``uvicorn.Config(app=..., <BentoML's keyword arguments>)`` and
``uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])``. The app is a trivial ASGI app: these
tests are about the HTTP layer. For the tests of the edge (the key-less lockout, the trickled body, deep
JSON, the half-closed client) the trivial app stands behind the real key gate (``serving.gate.Gate``) with
a key file and an access log in a temporary home. Only loopback traffic (a second client address is
127.0.0.2, which Linux routes to the loopback too); every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from serving.http_limits import BODY_GRACE_S, IDLE_GRACE_S

HEADER_TIMEOUT = 1.0
MAX_CONNECTIONS = 5
KEEP_ALIVE = 3.0  # install(keep_alive=3) overrides the timeout_keep_alive=5 BentoML passes
SLACK = 1.5
REPO = Path(__file__).resolve().parents[2]

SERVER = textwrap.dedent(
    """
    import socket, sys

    import uvicorn

    from serving.http_limits import install

    fd, header_timeout, max_connections, keep_alive, max_client, body_deadline, home = sys.argv[1:8]
    none = lambda value, kind: None if value == "none" else kind(value)  # noqa: E731
    install(float(header_timeout), int(max_connections), keep_alive=none(keep_alive, float),
            max_client_connections=none(max_client, int), body_deadline=none(body_deadline, float))
    fd = int(fd)

    BODY = b'{"ok":true}'

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        if body.startswith(b'{"sleep"'):  # a slow answer: {"sleep": seconds}
            import asyncio, json
            await asyncio.sleep(json.loads(body)["sleep"])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]})
        await send({"type": "http.response.body", "body": BODY})

    served = app
    if home != "none":  # the edge: the real key gate in front (it reads the installed body deadline)
        from salesml.settings import Settings
        from serving.gate import Gate

        served = Gate(app, Settings(home=home))

    # as _bentoml_impl/worker/service.py builds it (uvicorn 0.54 / BentoML 1.4.39)
    config = uvicorn.Config(
        app=served,
        backlog=2048,
        log_config=None,
        workers=1,
        ssl_certfile=None,
        ssl_keyfile=None,
        ssl_keyfile_password=None,
        ssl_ca_certs=None,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=None,
        server_header=False,
    )
    print(type(config).__name__, config.header_timeout, config.max_connections, config.timeout_keep_alive,
          flush=True)

    sock = socket.socket(fileno=fd)
    uvicorn.Server(config).run(sockets=[sock])
    """
)


class Server:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def connect(self, timeout: float = 5.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def open_connections(self) -> int:
        """TCP connections (not the listener) the server process holds a file descriptor for."""
        conns = psutil.Process(self.proc.pid).net_connections(kind="tcp")
        return sum(1 for c in conns if c.status != psutil.CONN_LISTEN)

    def wait_connections(self, n: int, within: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < within:
            if self.open_connections() == n:
                return time.monotonic() - t0
            time.sleep(0.05)
        raise AssertionError(f"server still holds {self.open_connections()} connections after {within}s (want {n})")


@contextlib.contextmanager
def run_server(tmp_path: Path, header_timeout: float, max_connections: int, keep_alive: float | None,
               max_client_connections: int | None = None, body_deadline: float | None = None,
               home: Path | None = None):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(2048)
    port = listener.getsockname()[1]
    log = tmp_path / f"server-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(listener.fileno()), str(header_timeout), str(max_connections),
             *("none" if x is None else str(x) for x in (keep_alive, max_client_connections, body_deadline, home))],
            pass_fds=[listener.fileno()], stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    listener.close()
    server = Server(proc, port, log)
    try:
        deadline = time.monotonic() + 30
        while True:  # ready when it answers
            assert proc.poll() is None, f"server exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"server not ready: {log.read_text()}"
            try:
                with server.connect(timeout=2) as s:
                    if get(s)[0] == 200:
                        break
            except OSError:
                time.sleep(0.1)
        server.wait_connections(0, within=5)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with run_server(tmp_path_factory.mktemp("http_limits"), HEADER_TIMEOUT, MAX_CONNECTIONS, KEEP_ALIVE) as srv:
        yield srv


@pytest.fixture
def idle_server(server):
    """The shared server, with no connection left over from an earlier test."""
    server.wait_connections(0, within=HEADER_TIMEOUT + KEEP_ALIVE + SLACK)
    return server


# -- a tiny HTTP/1.1 client ----------------------------------------------------------------------------


def read_response(s: socket.socket, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def get(s: socket.socket, path: str = "/") -> tuple[int, dict[str, str], bytes]:
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    return read_response(s)


def read_until_closed(s: socket.socket, within: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes; (data, seconds it took). Fails if still open."""
    t0 = time.monotonic()
    data = b""
    while True:
        left = within - (time.monotonic() - t0)
        assert left > 0, f"connection still open after {within}s (got {data!r})"
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return data, time.monotonic() - t0
        except TimeoutError:
            continue
        if not chunk:
            return data, time.monotonic() - t0
        data += chunk


def closed_now(s: socket.socket) -> bool:
    """Whether the server has closed (or refused) this connection, without waiting."""
    readable, _, _ = select.select([s], [], [], 0)
    if not readable:
        return False
    try:
        s.setblocking(False)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return True
            if not chunk.startswith(b"HTTP/1.1 503"):
                return False
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        s.setblocking(True)


# -- installation (in this process) --------------------------------------------------------------------


def test_import_changes_nothing():
    code = (
        "import uvicorn, uvicorn.config\n"
        "before = uvicorn.Config\n"
        "import serving.http_limits as hl\n"
        "assert uvicorn.Config is before is uvicorn.config.Config, uvicorn.Config\n"
        "assert hl.installed_limits() is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture
def restore_uvicorn(monkeypatch):
    import uvicorn

    from serving import http_limits

    monkeypatch.setattr(uvicorn, "Config", uvicorn.Config)  # put back whatever is there now, at teardown
    monkeypatch.setattr(http_limits, "_limits", http_limits._limits)
    return uvicorn


async def _app(scope, receive, send):  # pragma: no cover - never called
    raise AssertionError


def test_install_is_idempotent_and_the_config_uses_the_protocol(restore_uvicorn):
    import uvicorn
    import uvicorn.config

    from serving.http_limits import LimitedHttpToolsProtocol, install, installed_limits, uninstall

    install(2, 10)
    first = uvicorn.Config
    install(1.5, 7, keep_alive=4)
    assert uvicorn.Config is first  # not wrapped twice
    assert sum(1 for cls in uvicorn.Config.__mro__ if "_salesml_http_limits" in vars(cls)) == 1
    assert installed_limits().max_connections == 7

    config = uvicorn.Config(app=_app, log_config=None, timeout_keep_alive=5, server_header=False)
    assert isinstance(config, uvicorn.config.Config)
    assert (config.header_timeout, config.max_connections, config.timeout_keep_alive) == (1.5, 7, 4.0)
    config.load()
    assert config.http_protocol_class is LimitedHttpToolsProtocol  # load() takes a class as it is

    # `http` given positionally, as something else: still ours
    config = uvicorn.Config(_app, "127.0.0.1", 8000, None, None, "auto", "h11", log_config=None)
    config.load()
    assert config.http_protocol_class is LimitedHttpToolsProtocol

    uninstall()
    assert installed_limits() is None
    assert not getattr(uvicorn.Config, "_salesml_http_limits", False)


@pytest.mark.parametrize(
    "kwargs",
    [dict(header_timeout=0, max_connections=5), dict(header_timeout=float("inf"), max_connections=5),
     dict(header_timeout=1, max_connections=0), dict(header_timeout=1, max_connections=2.5),
     dict(header_timeout=1, max_connections=True), dict(header_timeout=1, max_connections=5, keep_alive=-1)],
)
def test_install_rejects_bad_limits(restore_uvicorn, kwargs):
    from serving.http_limits import install

    before = restore_uvicorn.Config
    with pytest.raises(ValueError):
        install(**kwargs)
    assert restore_uvicorn.Config is before


# -- header read timeout -------------------------------------------------------------------------------


def test_silent_connection_is_closed_after_header_timeout(idle_server):
    with idle_server.connect() as s:
        data, took = read_until_closed(s, within=HEADER_TIMEOUT + SLACK)
    assert data == b""  # nothing was asked, nothing is answered
    assert took > HEADER_TIMEOUT * 0.7


def test_half_sent_headers_are_closed_after_header_timeout(idle_server):
    with idle_server.connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n")
        data, took = read_until_closed(s, within=HEADER_TIMEOUT + SLACK)
    assert data == b"" or data.startswith(b"HTTP/1.1 408 ")
    if data:
        assert json.loads(data.partition(b"\r\n\r\n")[2]) == {"error": "request headers not received in time",
                                                             "field": None}
    assert took > HEADER_TIMEOUT * 0.7


def test_trickled_headers_do_not_extend_the_deadline(idle_server):
    request = b"GET / HTTP/1.1\r\nHost: test\r\n" + b"X-Pad: " + b"a" * 200
    t0 = time.monotonic()
    with idle_server.connect() as s:
        for i in range(len(request)):  # one byte every 0.1 s: 20 s worth, far beyond the timeout
            assert time.monotonic() - t0 < HEADER_TIMEOUT + SLACK, "trickling client was not cut off"
            try:
                s.sendall(request[i : i + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([s], [], [], 0.1)[0]:
                data, _ = read_until_closed(s, within=SLACK)
                assert data == b"" or data.startswith(b"HTTP/1.1 408 ")
                break
        else:
            pytest.fail("the whole request trickled through")
    assert HEADER_TIMEOUT * 0.7 < time.monotonic() - t0 < HEADER_TIMEOUT + SLACK


def test_keep_alive_connection_still_serves_and_idles_out_on_keep_alive(idle_server):
    with idle_server.connect() as s:
        status, headers, body = get(s)
        assert (status, json.loads(body)) == (200, {"ok": True})
        assert headers.get("connection") != "close"
        time.sleep(HEADER_TIMEOUT + 0.5)  # idle longer than header_timeout, shorter than keep-alive
        status, _, body = get(s)
        assert (status, json.loads(body)) == (200, {"ok": True})
        data, took = read_until_closed(s, within=KEEP_ALIVE + SLACK)  # uvicorn's keep-alive timer
    assert data == b""
    assert KEEP_ALIVE - 0.7 < took  # idle keep-alive is not cut by the header timer


def test_partial_next_request_on_keep_alive_connection_times_out(idle_server):
    with idle_server.connect() as s:
        assert get(s)[0] == 200
        time.sleep(0.3)
        s.sendall(b"GET / HTTP/1.1\r\nHo")  # cancels uvicorn's keep-alive timer; ours takes over
        data, took = read_until_closed(s, within=HEADER_TIMEOUT + SLACK)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert took < KEEP_ALIVE


def test_pipelined_requests_still_work(idle_server):
    with idle_server.connect() as s:
        s.sendall(b"GET /a HTTP/1.1\r\nHost: test\r\n\r\nGET /b HTTP/1.1\r\nHost: test\r\n\r\n")
        s.settimeout(5)
        data = b""
        while data.count(b'{"ok":true}') < 2:  # both responses may come in one segment
            chunk = s.recv(65536)
            assert chunk, f"closed after {data!r}"
            data += chunk
        assert data.count(b"HTTP/1.1 200 OK\r\n") == 2
        assert get(s)[0] == 200


# -- connection cap ------------------------------------------------------------------------------------


def assert_refused(s: socket.socket) -> None:
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        return  # closed: also a refusal
    data, _ = read_until_closed(s, within=SLACK)
    if data:
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 "), data
        assert b"connection: close" in head.lower()
        assert json.loads(body) == {"error": "too many connections", "field": None}


def test_connection_over_the_cap_is_refused_with_503_when_every_connection_is_busy(idle_server):
    with contextlib.ExitStack() as stack:
        busy = [stack.enter_context(idle_server.connect()) for _ in range(MAX_CONNECTIONS)]
        for s in busy:  # five requests being read: none of them may be closed to make room
            s.sendall(b"GET / HTTP/1.1\r\nHo")
        idle_server.wait_connections(MAX_CONNECTIONS, within=1)
        with idle_server.connect() as extra:
            # refused at once: the 503 is there before the client sends anything
            status, headers, body = read_response(extra, timeout=SLACK)
            assert (status, headers["connection"], json.loads(body)) == (
                503, "close", {"error": "too many connections", "field": None})
        with idle_server.connect() as extra:
            assert_refused(extra)
        for s in busy:  # the admitted connections are not penalised
            s.sendall(b"st: test\r\n\r\n")
            assert read_response(s)[0] == 200


def test_an_idle_keep_alive_connection_makes_room_for_a_new_one(idle_server):
    with contextlib.ExitStack() as stack:
        idle = []
        for _ in range(MAX_CONNECTIONS):  # five keep-alive connections, idle after one request, oldest first
            idle.append(stack.enter_context(idle_server.connect()))
            assert get(idle[-1])[0] == 200
            time.sleep(0.02)
        idle_server.wait_connections(MAX_CONNECTIONS, within=1)
        with idle_server.connect() as busy:  # all five idle for less than IDLE_GRACE_S: none is closed yet
            assert_refused(busy)
        time.sleep(IDLE_GRACE_S + 0.1)
        with idle_server.connect() as fresh:
            assert get(fresh)[0] == 200  # served: the longest idle connection was closed for it
            data, _ = read_until_closed(idle[0], within=SLACK)
            assert data == b""
            assert all(get(s)[0] == 200 for s in idle[1:])  # the others keep their connections


def test_a_silent_connection_is_closed_before_a_keep_alive_one(idle_server):
    with contextlib.ExitStack() as stack:
        served = []
        for _ in range(MAX_CONNECTIONS - 1):
            served.append(stack.enter_context(idle_server.connect()))
            assert get(served[-1])[0] == 200
        silent = stack.enter_context(idle_server.connect())  # the youngest, but it never sent a byte
        idle_server.wait_connections(MAX_CONNECTIONS, within=1)
        with idle_server.connect() as fresh:
            assert get(fresh)[0] == 200
            data, _ = read_until_closed(silent, within=SLACK)
            assert data == b""
            assert all(get(s)[0] == 200 for s in served)


def test_half_open_connections_never_lock_out_a_new_client(idle_server):
    with contextlib.ExitStack() as stack:
        silent = [stack.enter_context(idle_server.connect()) for _ in range(MAX_CONNECTIONS * 4)]
        with idle_server.connect() as legit:  # accepted after twenty silent ones, well within 1 s
            assert get(legit)[0] == 200
        assert sum(not closed_now(s) for s in silent) <= MAX_CONNECTIONS
    idle_server.wait_connections(0, within=2)


# -- per-client fairness: a second client address (127.0.0.2) -----------------------------------------

CLIENT_CAP = 4


def connect_from(server: Server, address: str, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout, source_address=(address, 0))


@pytest.fixture(scope="module")
def fair_server(tmp_path_factory):
    """Ten connections per worker, four per client address."""
    with run_server(tmp_path_factory.mktemp("fair"), HEADER_TIMEOUT, 10, KEEP_ALIVE,
                    max_client_connections=CLIENT_CAP) as srv:
        yield srv


def test_one_client_holds_at_most_its_share_and_others_keep_theirs(fair_server):
    fair_server.wait_connections(0, within=HEADER_TIMEOUT + KEEP_ALIVE + SLACK)
    with contextlib.ExitStack() as stack:
        legit = [stack.enter_context(connect_from(fair_server, "127.0.0.1")) for _ in range(3)]
        for s in legit:
            assert get(s)[0] == 200
        attacker = [stack.enter_context(connect_from(fair_server, "127.0.0.2")) for _ in range(40)]
        time.sleep(0.3)
        assert sum(not closed_now(s) for s in attacker) <= CLIENT_CAP  # its oldest closed for its newest
        assert fair_server.open_connections() <= 3 + CLIENT_CAP
        assert all(get(s)[0] == 200 for s in legit)  # the other client's keep-alive connections untouched
        with connect_from(fair_server, "127.0.0.1") as fresh:
            assert get(fresh)[0] == 200
        # the attacker's own busy connections: over its cap with nothing idle to close, it is refused
        busy = [stack.enter_context(connect_from(fair_server, "127.0.0.2")) for _ in range(CLIENT_CAP)]
        for s in busy:
            s.sendall(b"GET / HTTP/1.1\r\nHo")
        time.sleep(0.2)
        with connect_from(fair_server, "127.0.0.2") as extra:
            assert read_response(extra, timeout=SLACK)[0] == 503
        with connect_from(fair_server, "127.0.0.1") as fresh:  # and the other client is still served
            assert get(fresh)[0] == 200


# -- abandoned half-open connections -------------------------------------------------------------------


def _assert_200_abandoned_are_reclaimed(server: Server) -> None:
    t0 = time.monotonic()
    socks = []
    try:
        for _ in range(200):  # opened, never written to, never closed by the client
            socks.append(server.connect())
        deadline = HEADER_TIMEOUT + SLACK + 2  # the last ones were accepted up to a moment after the first
        pending = list(socks)
        while pending and time.monotonic() - t0 < deadline:
            pending = [s for s in pending if not closed_now(s)]
            time.sleep(0.05)
        assert not pending, f"{len(pending)} of 200 half-open connections still open after {deadline}s"
        server.wait_connections(0, within=2)
        t1 = time.monotonic()
        with server.connect() as s:
            assert get(s)[0] == 200
        assert time.monotonic() - t1 < 1.0
    finally:
        for s in socks:
            s.close()


def test_200_abandoned_half_open_connections_are_all_reclaimed(idle_server):
    _assert_200_abandoned_are_reclaimed(idle_server)  # each closed for a newer one, the last 5 timed out


def test_200_abandoned_half_open_connections_are_reclaimed_without_the_cap(tmp_path):
    with run_server(tmp_path, HEADER_TIMEOUT, 10_000, None) as srv:  # only the header timeout acts
        _assert_200_abandoned_are_reclaimed(srv)


# -- the edge: the real key gate behind the limited protocol --------------------------------------------

EDGE_BODY_DEADLINE = 1.5
EDGE_CONNECTIONS = 64


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    """(server, csm key, settings): the gate with a key file and an access log in a home of its own."""
    from salesml.settings import Settings
    from serving.auth import KeyStore

    home = tmp_path_factory.mktemp("edge")
    settings = Settings(home=home)
    key = KeyStore(settings.api_keys_path).add("csm", "edge")[1]
    with run_server(home, HEADER_TIMEOUT, EDGE_CONNECTIONS, KEEP_ALIVE, body_deadline=EDGE_BODY_DEADLINE,
                    home=home) as srv:
        yield srv, key, settings


def request(path: str, body: bytes, key: str, length: int | None = None) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: test\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n\r\n").encode() + body


def access_rows(settings, request_count: int, within: float = 5.0):
    """The access log once it holds ``request_count`` rows (the server commits each before answering)."""
    from serving.predlog import PredictionLog

    t0 = time.monotonic()
    while True:
        rows = PredictionLog(settings.prediction_log_path).access()
        if len(rows) >= request_count or time.monotonic() - t0 > within:
            return rows


def test_edge_a_trickled_body_is_answered_408_at_the_total_deadline(edge):
    server, key, settings = edge
    before = len(access_rows(settings, 0))
    body = b'{"account_ids": ["A1"]}' + b" " * 200
    t0 = time.monotonic()
    with server.connect() as s:
        s.sendall(request("/health", b"", key, length=len(body)))
        answer = b""
        for i in range(len(body)):  # one byte every 0.1 s, never a pause near serve_body_timeout
            try:
                s.sendall(body[i : i + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([s], [], [], 0.1)[0]:
                answer, _ = read_until_closed(s, within=SLACK)
                break
            assert time.monotonic() - t0 < EDGE_BODY_DEADLINE + SLACK, "the trickled body is still being read"
    took = time.monotonic() - t0
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert json.loads(payload)["error"] == f"the whole body must arrive within {EDGE_BODY_DEADLINE:g} s of the headers"
    assert EDGE_BODY_DEADLINE * 0.8 < took < EDGE_BODY_DEADLINE + SLACK
    rows = access_rows(settings, before + 1)
    assert list(rows["status"])[before:] == [408] and rows["endpoint"].iloc[-1] == "/health"


def test_edge_a_trickled_body_on_an_open_path_is_answered_408_by_the_protocol(edge):
    server, _, _ = edge
    t0 = time.monotonic()
    with server.connect() as s:  # "/" is not behind the gate; its app waits for the whole body
        s.sendall(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n{")
        answer = b""
        for _ in range(100):
            try:
                s.sendall(b" ")
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([s], [], [], 0.1)[0]:
                answer, _ = read_until_closed(s, within=SLACK)
                break
    took = time.monotonic() - t0
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert json.loads(payload)["error"] == f"the whole body must arrive within {EDGE_BODY_DEADLINE:g} s of the headers"
    assert EDGE_BODY_DEADLINE + BODY_GRACE_S - 0.3 < took < EDGE_BODY_DEADLINE + BODY_GRACE_S + SLACK


def nested(depth: int) -> bytes:
    return b'{"account_ids": ["A1"], "x": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [40, 999, 5000, 100_000])
def test_edge_deep_json_is_a_fast_400_with_an_access_row(edge, depth):
    server, key, settings = edge
    before = len(access_rows(settings, 0))
    with server.connect() as s:
        t0 = time.monotonic()
        s.sendall(request("/health", nested(depth), key))
        status, _, payload = read_response(s)
        took = time.monotonic() - t0
    assert status == 400 and took < 1.0
    assert json.loads(payload) == {"error": "the body nests arrays and objects deeper than 32 levels",
                                   "field": None}
    rows = access_rows(settings, before + 1)
    assert list(rows["status"])[before:] == [400] and rows["entities"].iloc[-1] == []


def test_edge_json_at_the_depth_limit_passes(edge):
    server, key, _ = edge
    with server.connect() as s:  # the body object + "x" nested 31 deep: 32 levels
        s.sendall(request("/health", nested(31), key))
        assert read_response(s)[0] == 200


def test_edge_many_deep_json_requests_at_once_do_not_crowd_out_legitimate_calls(edge):
    from concurrent.futures import ThreadPoolExecutor

    server, key, _ = edge
    deep = request("/health", nested(5000), key)

    def attack(_: int) -> int:
        try:
            with server.connect() as s:
                s.sendall(deep)
                return read_response(s)[0]
        except OSError:
            return 0  # closed to make room for someone else

    def legit(_: int) -> list[int]:
        with server.connect() as s:
            out = []
            for _ in range(10):
                s.sendall(request("/health", b'{"account_ids": ["A1"]}', key))
                out.append(read_response(s)[0])
            return out

    with ThreadPoolExecutor(48) as pool:
        attacks = [pool.submit(attack, i) for i in range(300)]
        legits = [pool.submit(legit, i) for i in range(8)]
        legit_status = [x for f in legits for x in f.result(timeout=60)]
        attack_status = [f.result(timeout=60) for f in attacks]
    assert legit_status == [200] * 80
    assert set(attack_status) <= {400, 503, 0} and attack_status.count(400) > 0


def test_edge_a_half_closed_client_gets_its_answer(edge):
    server, key, settings = edge
    before = len(access_rows(settings, 0))
    with server.connect() as s:
        s.sendall(request("/health", b'{"sleep": 0.3, "account_ids": ["A1"]}', key))
        s.shutdown(socket.SHUT_WR)  # nothing more to send: the answer still comes, then the server closes
        data, _ = read_until_closed(s, within=5)
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b'{"ok":true}')
    rows = access_rows(settings, before + 1)
    assert list(rows["status"])[before:] == [200]


def test_edge_a_client_gone_before_its_body_is_a_499_not_a_500(edge):
    server, key, settings = edge
    before = len(access_rows(settings, 0))
    with server.connect() as s:
        s.sendall(request("/health", b'{"account_ids": [', key, length=100))
        time.sleep(0.2)  # the gate is reading the body
        s.shutdown(socket.SHUT_WR)  # the request can never complete
        read_until_closed(s, within=5)
    rows = access_rows(settings, before + 1)
    assert list(rows["status"])[before:] == [499]
