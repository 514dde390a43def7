"""The durable token store (issue 5.2) on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from callbridge.store.tokens import Tokens, TokenStore

INSTALL = Tokens(
    access_token="acc-1",
    refresh_token="ref-1",
    expires=1000.0,
    member_id="m1",
    client_endpoint="https://portal.example/rest/",
    application_token="app-tok",
    domain="portal.example",
    scope="crm,telephony",
)


def test_install_refresh_and_restart(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = TokenStore.open(path)
    assert store.load() is None
    g1 = store.save(INSTALL)
    g2 = store.save_refreshed(access_token="acc-2", refresh_token="ref-2", expires=2000.0)
    assert g2 == g1 + 1
    store.close()
    again = TokenStore.open(path)  # a new process
    loaded = again.load()
    assert loaded is not None
    assert (loaded.access_token, loaded.refresh_token, loaded.expires) == ("acc-2", "ref-2", 2000.0)
    # the refresh answer carries no application token and names the OAuth server as domain
    assert loaded.application_token == "app-tok"
    assert loaded.member_id == "m1"
    assert loaded.client_endpoint == "https://portal.example/rest/"
    again.close()


def test_failure_is_recorded_and_a_reinstall_clears_it(tmp_path: Path) -> None:
    store = TokenStore.open(tmp_path / "s.sqlite3")
    store.save(INSTALL)
    store.mark_failed("invalid_grant: refresh token expired")
    failed = store.load()
    assert failed is not None and failed.failed_reason == "invalid_grant: refresh token expired"
    generation = store.save(
        Tokens("acc-9", "ref-9", 5000.0, "m1", "", "", "", "")  # a code exchange: no portal
    )
    fresh = store.load()
    assert fresh is not None and fresh.failed_reason is None and fresh.generation == generation
    assert fresh.client_endpoint == "https://portal.example/rest/"
    assert fresh.application_token == "app-tok"
    store.close()


def test_refresh_without_install_is_an_error(tmp_path: Path) -> None:
    store = TokenStore.open(tmp_path / "s.sqlite3")
    with pytest.raises(LookupError, match="no Bitrix24 tokens"):
        store.save_refreshed(access_token="a", refresh_token="b", expires=1.0)
    store.close()


def test_repr_hides_secrets() -> None:
    text = repr(INSTALL)
    for secret in ("acc-1", "ref-1", "app-tok"):
        assert secret not in text
