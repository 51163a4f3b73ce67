"""The one way servers are waited for and stopped (``salesml.processes``), which ``salesml team up``,
``serving.runner`` (make demo, the benches) and ``experiments.ui`` (mlflow ui) all use."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from salesml.processes import ProcessExited, answers, free_port, kill_process_group, wait_until_ready

# A server that forks a worker, as uvicorn / BentoML / mlflow do: stopping it must stop both.
SERVER = """
import http.server, os, sys
if os.fork() == 0:
    import time
    time.sleep(600)
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def _start(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_waits_until_the_server_answers_then_stops_its_whole_group(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    assert not answers(url, timeout=0.5)
    proc = _start(SERVER, str(port))
    try:
        assert wait_until_ready(proc, url, timeout=30, interval=0.1)
        assert answers(url)
    finally:
        stopped = kill_process_group(proc.pid, grace=5, proc=proc)
    assert stopped and proc.returncode is not None
    assert kill_process_group(proc.pid) is False  # no process left in the group: the forked worker went too


def test_a_server_that_exits_is_reported_at_once_with_its_status():
    proc = _start("import sys; sys.exit(3)")
    t0 = time.monotonic()
    with pytest.raises(ProcessExited) as exc:
        wait_until_ready(proc, f"http://127.0.0.1:{free_port()}/", timeout=30, interval=0.1)
    assert exc.value.returncode == 3 and time.monotonic() - t0 < 10


def test_a_server_that_never_answers_times_out_and_one_that_ignores_sigterm_is_killed():
    proc = _start("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)")
    try:
        assert wait_until_ready(proc, f"http://127.0.0.1:{free_port()}/", timeout=0.5, interval=0.1) is False
    finally:
        t0 = time.monotonic()
        assert kill_process_group(proc.pid, grace=0.5, proc=proc)
    assert proc.returncode == -9 and time.monotonic() - t0 < 5


def test_a_leader_known_by_its_pid_alone_is_reaped_not_waited_out():
    """``serving.runner.stop`` has the pid of a server this process started, not its Popen: the exited
    leader is reaped at once instead of lingering as a zombie until the grace ends."""
    proc = _start("import time; time.sleep(600)")
    pid = proc.pid
    t0 = time.monotonic()
    assert kill_process_group(pid, grace=10)
    assert time.monotonic() - t0 < 5
    assert kill_process_group(pid) is False
    proc.wait(timeout=5)  # reaped already: Popen learns it has ended
