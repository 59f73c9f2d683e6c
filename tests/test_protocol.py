"""The one table of commands: the daemon answers from it, wsgictl sends from it."""

import inspect

import pytest

from supervisor.cli.commands import Client
from supervisor.control import protocol
from supervisor.control.server import ControlServer


def test_every_command_has_its_handler_and_no_handler_is_left_out():
    handlers = {name for name, _ in inspect.getmembers(ControlServer, inspect.iscoroutinefunction)}
    for command in protocol.COMMANDS.values():
        assert f"_{command.handler}" in handlers, command
        assert list(inspect.signature(getattr(ControlServer, f"_{command.handler}")).parameters) == [
            "self",
            "request",
            "conn",
            "peer",
        ]
    helpers = {"_accept", "_serve", "_handle_line", "_send", "_stream", "close"}
    assert handlers - helpers == {f"_{c.handler}" for c in protocol.COMMANDS.values()}
    assert not hasattr(ControlServer, "add_handler")


def test_launch_is_for_the_launch_socket_only():
    assert protocol.COMMANDS["launch"].socket == protocol.LAUNCH
    assert {c.socket for name, c in protocol.COMMANDS.items() if name != "launch"} == {protocol.CONTROL}


def test_requests_are_built_from_the_table():
    assert protocol.request("status", services=["a"], lines=20) == {"cmd": "status", "services": ["a"], "lines": 20}
    with pytest.raises(ValueError, match="not a command of the control socket"):
        protocol.request("launch", service="api", instance="")
    with pytest.raises(ValueError, match="not a command"):
        protocol.request("frobnicate")
    with pytest.raises(ValueError, match="takes no follow"):
        protocol.request("status", follow=True)


def test_the_client_sends_nothing_outside_the_table(tmp_path):
    with pytest.raises(ValueError):
        Client(tmp_path).request({"cmd": "launch", "service": "api", "instance": ""})


def test_the_wire_format_is_one_json_line():
    assert protocol.encode(protocol.request("ping")) == b'{"cmd":"ping"}\n'
    assert protocol.decode_request(b'{"cmd":"launch","service":"api","instance":""}')["service"] == "api"
    with pytest.raises(protocol.ProtocolError, match="unknown command"):
        protocol.decode_request(b'{"cmd":"nope"}')
