"""hf.hub: the one reading of the offline switches and the one reachability probe (data, convert, export use them)."""

from __future__ import annotations

import socket

import pytest

from sunfish_lib.data.sources import open_source, parse_source
from sunfish_lib.errors import SunfishError
from sunfish_lib.hf.hub import hub_offline, hub_reachable, hub_unreachable

SWITCHES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


@pytest.fixture
def no_switches(monkeypatch):
    for v in SWITCHES + ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(v, raising=False)
    return monkeypatch


@pytest.mark.parametrize("var", SWITCHES)
@pytest.mark.parametrize("value, offline", [("1", True), ("on", True), ("TRUE", True), ("0", False), ("", False)])
def test_each_offline_switch_counts(no_switches, var, value, offline):
    no_switches.setenv(var, value)
    assert hub_offline() is offline


def test_data_sources_obey_transformers_offline_too(no_switches):
    """data/sources.py had its own reading that ignored TRANSFORMERS_OFFLINE (and then probed the network)."""
    no_switches.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(SunfishError, match="offline mode is on"):
        open_source(parse_source("fineweb:sample-10BT"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_an_endpoint_that_refuses_is_unreachable_with_a_reason(no_switches):
    no_switches.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    why = hub_unreachable(timeout=2.0)
    assert why is not None and why.startswith("cannot connect to 127.0.0.1")
    assert hub_reachable(timeout=2.0) is False


def test_an_endpoint_that_answers_is_reachable(no_switches):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        no_switches.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert hub_unreachable(timeout=2.0) is None


def test_behind_a_proxy_the_library_is_left_to_try(no_switches):
    no_switches.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    no_switches.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert hub_unreachable(timeout=2.0) is None
