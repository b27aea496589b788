"""`qosd run`'s arguments are checked before anything starts."""

from __future__ import annotations

import pytest

from qosd.cli.daemon_cmd import _group_id, _host_port
from qosd.errors import BadInput


@pytest.mark.parametrize("value, expected", [
    ("127.0.0.1:9108", ("127.0.0.1", 9108)), ("0.0.0.0:0", ("0.0.0.0", 0)),
    ("[::1]:0", ("::1", 0)), (":9108", ("127.0.0.1", 9108)),
])
def test_metrics_address_port_zero_means_any_free_port(value, expected):
    assert _host_port(value) == expected


@pytest.mark.parametrize("value", ["9108", "host:", "host:65536", "host:-1", "host:http"])
def test_bad_metrics_addresses_are_bad_input(value):
    with pytest.raises(BadInput, match="--metrics"):
        _host_port(value)


def test_socket_group_by_name_or_number_and_an_unknown_name_is_bad_input():
    assert _group_id(None) is None and _group_id("0") == 0 and _group_id("root") == 0
    with pytest.raises(BadInput, match="--socket-group: no group 'no-such-group-qosd'"):
        _group_id("no-such-group-qosd")


@pytest.mark.parametrize("args, site", [([], True), (["--no-site"], False)])
def test_no_site_keeps_the_daemon_off_the_site_channel(monkeypatch, tmp_path, args, site):
    from click.testing import CliRunner

    import qosd.daemon.service as service
    from qosd.cli import main

    seen = []

    class FakeDaemon:
        def __init__(self, config) -> None:
            seen.append(config)

        async def run(self) -> int:
            return 0

    monkeypatch.setattr(service, "Daemon", FakeDaemon)
    result = CliRunner().invoke(main, ["run", "--policy", str(tmp_path / "p.yaml"),
                                       "--recorder-dir", "off", *args])
    assert result.exit_code == 0, result.output
    assert [c.site for c in seen] == [site]
