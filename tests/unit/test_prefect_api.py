"""The temporary Prefect server the CLI starts early: it comes up on loopback, Prefect is pointed at it only
inside ``api()``, it is stopped on the way out, and a configured API starts nothing."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from flows import prefect_api
from flows.prefect_api import PrefectStartError, TemporaryServer, early_prefect, wait_until_healthy


def test_no_configured_api_starts_a_loopback_server_for_the_flow_and_stops_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setattr(prefect_api, "api_url_hint", lambda: None)  # whatever other tests configured
    monkeypatch.setattr(prefect_api, "configured_api_url", lambda: None)
    outside = PREFECT_API_URL.value()
    with early_prefect() as early:
        early.start()
        server = early.server
        assert server is not None
        assert server.process.poll() is None
        with early.api() as url:
            assert url == server.api_url
            assert url.startswith("http://127.0.0.1:")
            assert PREFECT_API_URL.value() == url
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                assert response.status == 200
        assert PREFECT_API_URL.value() == outside  # only the flow call sees it
    assert server.process.poll() is not None
    assert early.server is None


def test_a_configured_api_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.setattr(prefect_api, "configured_api_url", lambda: "http://127.0.0.1:4200/api")
    with early_prefect() as early:
        early.start()
        assert early.server is None
        with early.api() as url:
            assert url is None


def test_a_server_that_exits_is_one_line_with_its_last_error() -> None:
    log = tempfile.TemporaryFile()
    script = "import sys; sys.stderr.write('starting\\nboom: bad database\\n'); sys.exit(1)"
    process = subprocess.Popen([sys.executable, "-c", script], stderr=log)
    with pytest.raises(PrefectStartError, match="exited: boom: bad database"):
        wait_until_healthy(TemporaryServer(process, 9, log), timeout=30)


def test_links_to_the_temporary_server_are_dropped_and_others_kept() -> None:
    import logging

    from flows.prefect_api import DropLinksTo

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("prefect.flow_runs", logging.INFO, __file__, 1, message, None, None)

    drop = DropLinksTo("http://127.0.0.1:5123")
    assert not drop.filter(record("View at http://127.0.0.1:5123/runs/flow-run/abc"))
    assert drop.filter(record("View at https://prefect.example.org/runs/flow-run/abc"))
    assert drop.filter(record("Beginning flow run 'x' for flow 'segment-batch'"))


def test_the_hint_reads_the_environment_and_the_active_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.prefect_api import api_url_hint

    profiles = tmp_path / "profiles.toml"
    profiles.write_text(
        'active = "local"\n[profiles.local]\nPREFECT_LOGGING_LEVEL = "INFO"\n'
        '[profiles.team]\nPREFECT_API_URL = "http://127.0.0.1:4200/api"\n'
    )
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_PROFILE", raising=False)
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(profiles))
    assert api_url_hint() is None
    monkeypatch.setenv("PREFECT_PROFILE", "team")
    assert api_url_hint() == "http://127.0.0.1:4200/api"
    monkeypatch.setenv("PREFECT_API_URL", "http://10.0.0.5:4200/api")
    assert api_url_hint() == "http://10.0.0.5:4200/api"


def test_a_server_started_on_a_wrong_hint_is_stopped_for_the_configured_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefect_api, "api_url_hint", lambda: None)
    monkeypatch.setattr(prefect_api, "configured_api_url", lambda: "http://127.0.0.1:4200/api")
    with early_prefect() as early:
        early.start()
        server = early.server
        assert server is not None
        with early.api() as url:
            assert url is None
            assert early.server is None
        assert server.process.poll() is not None


@pytest.mark.parametrize(
    ("file", "text"),
    [
        (".env", "PREFECT_API_URL='http://127.0.0.1:4200/api'\n"),
        ("prefect.toml", '[api]\nurl = "http://127.0.0.1:4200/api"\n'),
        ("pyproject.toml", '[tool.prefect.api]\nurl = "http://127.0.0.1:4200/api"\n'),
    ],
)
def test_an_api_configured_in_the_working_folder_is_seen_without_importing_prefect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file: str, text: str
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(tmp_path / "no-profiles.toml"))
    monkeypatch.chdir(tmp_path)
    assert prefect_api.api_url_hint() is None
    (tmp_path / file).write_text(text)
    assert prefect_api.api_url_hint() == "http://127.0.0.1:4200/api"


def test_auto_uses_prefect_only_where_an_api_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefect_api, "api_url_hint", lambda: None)
    assert [prefect_api.uses_prefect(choice) for choice in ("auto", "on", "off")] == [False, True, False]
    monkeypatch.setattr(prefect_api, "api_url_hint", lambda: "http://127.0.0.1:4200/api")
    assert [prefect_api.uses_prefect(choice) for choice in ("auto", "on", "off")] == [True, True, False]


def test_a_disabled_early_prefect_starts_nothing_and_points_prefect_nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefect_api, "api_url_hint", lambda: None)
    with early_prefect(enabled=False) as early:
        early.start()
        with early.api() as url:
            assert (url, early.server) == (None, None)
