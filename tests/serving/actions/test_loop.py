"""The loop from score to a person, for real: weekly scheduled runs over the simulated export (real
Feast stores, registered models, MLflow), the warning rule, and delivery to a real local webhook
receiver that refuses each event's first attempt.

On a copy of the served environment (tests/serving/conftest.py), so score files, warnings and the
chs_scores view stay in the copy.
"""

from __future__ import annotations

import json
import shutil
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from salesml.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.mlflow]
RANK = {"green": 0, "yellow": 1, "orange": 2, "red": 3}


class Receiver:
    """A webhook receiver that answers 503 to the first attempt of every delivery, then 200."""

    def __init__(self):
        self.received: list[dict] = []
        self.attempts: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                delivery = self.headers["X-Salesml-Delivery"]
                outer.attempts[delivery] = outer.attempts.get(delivery, 0) + 1
                if outer.attempts[delivery] == 1:
                    self.send_response(503)
                else:
                    outer.received.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def home(served_settings, tmp_path_factory, receiver) -> Settings:
    dst = tmp_path_factory.mktemp("loop") / "home"
    shutil.copytree(served_settings.root, dst, ignore=shutil.ignore_patterns("mlartifacts", "predictions.db*",
                                                                            "actions", "scores"))
    return Settings(home=dst, warning_webhook_url=receiver.url, warning_webhook_backoff=0.01,
                    warning_webhook_attempts=3, playbook_holdout_share=0.2)


@pytest.fixture(scope="module")
def weeks(home, core) -> dict:
    """Five weekly runs ending at the export's end, each followed by its warnings and their delivery."""
    from serving.actions.runs import warn_from_run
    from serving.actions.warnings import open_warning_store
    from serving.actions.webhook import deliver_pending
    from serving.scoring_book import resolve_as_of
    from serving.scoring_job import score_book

    spec = home.spec("chs")
    end, _ = resolve_as_of(home, spec, core.store.get_feature_service(spec.feature_service), None)
    out = {"runs": {}, "raised": {}}
    with open_warning_store(home) as store:
        for d in [end - timedelta(weeks=k) for k in range(4, -1, -1)]:
            run = score_book(home, "chs", d, core=core)
            out["runs"][d] = run
            out["raised"][d] = warn_from_run(store, run)
            deliver_pending(store, home)
    return out


def test_every_worsening_raises_exactly_one_warning_with_playbook_owner_and_attribution(weeks, home):
    from serving.actions.warnings import open_warning_store

    dates = sorted(weeks["runs"])
    assert weeks["raised"][dates[0]] == []  # the first run only sets the levels later runs compare with
    total = 0
    for d in dates[1:]:
        frame = weeks["runs"][d].frame
        seen = frame[frame["previous_level"].notna()]
        worse = set(seen.loc[seen["level"].map(RANK) > seen["previous_level"].map(RANK), "account_id"])
        level_warnings = [w for w in weeks["raised"][d] if w["kind"] == "level"]
        assert sorted(w["account_id"] for w in level_warnings) == sorted(worse), d  # one each, no more
        for w in level_warnings:
            row = frame.set_index("account_id").loc[w["account_id"]]
            assert (w["old_level"], w["new_level"]) == (row["previous_level"], row["level"])
            assert w["playbook_id"] and w["playbook_version"] and w["owner"]
            assert w["change_text"] and w["change_text"] == row["change_text"]  # the run's attribution
        total += len(weeks["raised"][d])
    assert total >= 5, "the simulated weeks should move some accounts to a worse level"
    with open_warning_store(home) as store:
        frame = store.frame()
    assert len(frame) == total and frame["key"].is_unique
    held = frame["holdout"]
    assert held.any() and (~held).any()  # 20% held out: both kinds present
    assert frame.loc[~held, "prompted"].all() and not frame.loc[held, "prompted"].any()


def test_rerunning_a_date_raises_nothing_and_sends_nothing(weeks, home, core, receiver):
    from serving.actions.runs import warn_from_run
    from serving.actions.warnings import open_warning_store
    from serving.actions.webhook import deliver_pending
    from serving.scoring_job import score_book

    last = max(weeks["runs"])
    received = len(receiver.received)
    with open_warning_store(home) as store:
        before = len(store.frame())
        again = score_book(home, "chs", last, core=core)
        assert warn_from_run(store, again) == []
        deliver_pending(store, home)
        assert len(store.frame()) == before
    assert len(receiver.received) == received


def test_the_receiver_gets_each_warning_and_every_refused_attempt_is_logged(weeks, home, receiver):
    from serving.actions.warnings import open_warning_store

    raised = {w["warning_id"] for ws in weeks["raised"].values() for w in ws}
    got = [b["warning"]["warning_id"] for b in receiver.received if b["event"] == "warning.raised"]
    assert sorted(got) == sorted(raised)  # each one, once
    held = {w["warning_id"] for ws in weeks["raised"].values() for w in ws if w["holdout"]}
    assert all(b["warning"]["playbook"] is None for b in receiver.received if b["warning"]["warning_id"] in held)
    with open_warning_store(home) as store:
        log = store.deliveries()
    assert set(log["warning_id"]) == raised
    for _, attempts in log.groupby("event_id"):
        attempts = attempts.sort_values("attempt")
        assert attempts["attempt"].tolist() == [1, 2]
        assert attempts["http_status"].tolist() == [503, 200]
        assert attempts["delivered"].astype(bool).tolist() == [False, True]
        assert pd.notna(attempts["error"].iloc[0]) and "503" in attempts["error"].iloc[0]
