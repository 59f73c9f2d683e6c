"""The control and launch sockets: transport, peer checks and request handlers.

`<runtime>/control.sock`, mode 0660 with a configurable group, is for
`wsgictl` and wsgi@.service: a peer is let in when it is root, the
daemon's own user, or a member of the control group (checked through
SO_PEERCRED, not trusted from the message).

`<runtime>/daemon/launch.sock`, mode 0600, is for the vassals' launchers
alone, which ask for their service's listening socket: a peer is let in
when it runs as root or the daemon's user and is a process below the
daemon's emperor (the launcher of a vassal the emperor started), so that
nobody else can take an API's socket or pose as its master.

Which command each socket takes, and which method answers it, is
`protocol.COMMANDS`. One JSON request per line; garbage, oversize or slow
requests get an error reply or a closed connection and never disturb other
clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import supervisor.control.protocol as protocol
from supervisor.control.protocol import (
    CONTROL,
    EXIT_FAILED,
    EXIT_NOT_RUNNING,
    EXIT_UNKNOWN,
    LAUNCH,
    ProtocolError,
    encode,
    error,
)
from supervisor.control.stacks import stacks
from supervisor.listeners import Listener, listen
from supervisor.logs.pipeline import DAEMON_NAME
from supervisor.observe.procs import is_descendant
from supervisor.state.service import LogLine
from supervisor.surfaces.rotation import in_rotation

if TYPE_CHECKING:
    from supervisor.state.reconcile import Applied
    from supervisor.state.supervisor import Supervisor

log = logging.getLogger("wsgi-supervisor")

IDLE_TIMEOUT = 30.0  # a client that sends nothing for this long is dropped
FOLLOW_QUEUE = 10000  # lines a slow `logs -f` reader may lag behind before lines are skipped for it
DEFAULT_WAIT = 120.0
LAUNCH_MODE = 0o600  # the emperor runs the launchers as the daemon's user (root)
ACCEPT_RETRY = 0.1  # seconds before the next accept once one failed for want of resources
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class ClientGone(Exception):
    """A request ended the connection (its client went away, or it was a one-shot): close quietly."""


class Peer(NamedTuple):
    socket: str  # CONTROL or LAUNCH: where it connected
    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)


def _groups_of(pid: int) -> set[int]:
    """The supplementary groups of `pid`. Read by hand: psutil's gids() has only the real,
    effective and saved group ids, not the `Groups:` line of /proc/PID/status."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()


async def drain_first(sup: Supervisor, names: list[str], seconds: float) -> None:
    """Out of rotation, then `seconds` for the load balancer to notice, before the action."""
    await asyncio.gather(*(sup.command("drain", name) for name in names))
    await asyncio.sleep(seconds)


class ControlServer:
    def __init__(self, sup: Supervisor, reload_config: Callable[[], Awaitable[Applied | dict[str, Any]]]):
        """`reload_config` reads the manifest again and hands it to the supervisor (main.py's, which
        knows how to load one): what the supervisor took, or the refusal of a manifest that is not valid."""
        self.sup = sup
        self.reload_config = reload_config
        self.loop = asyncio.get_running_loop()
        self.listeners: dict[str, Listener] = {}
        self.accepting: list[asyncio.Task[None]] = []
        self.clients: set[asyncio.Task[Any]] = set()
        # one handler per command of the table, each called as handler(request, conn, peer)
        self.handlers = {name: getattr(self, f"_{c.handler}") for name, c in protocol.COMMANDS.items()}

    def open(self) -> None:
        cfg = self.sup.config
        layout = self.sup.layout
        self.listeners[CONTROL] = listen(layout.control_socket, cfg.control_mode, cfg.control_gid)
        self.listeners[LAUNCH] = listen(layout.launch_socket, LAUNCH_MODE)
        for kind, listener in self.listeners.items():
            listener.sock.setblocking(False)
            self.accepting.append(self.loop.create_task(self._accept(kind, listener), name=f"{kind}-accept"))

    async def _accept(self, kind: str, listener: Listener) -> None:
        """Accept for as long as the daemon runs: a failed accept (no file descriptor left on a busy
        host, a client gone before it was taken) costs a pause, never the loop, which would leave a
        daemon that had answered answering nothing any more."""
        short = False
        while True:
            try:
                conn, _ = await self.loop.sock_accept(listener.sock)
            except OSError as exc:
                if exc.errno not in OUT_OF_RESOURCES:
                    continue  # that one client's trouble
                if not short:
                    log.warning("%s socket: cannot accept: %s; retrying", kind, exc.strerror or exc)
                short = True
                await asyncio.sleep(ACCEPT_RETRY)  # what holds the descriptors lets go meanwhile
                continue
            if short:
                log.info("%s socket: accepting again", kind)
                short = False
            conn.setblocking(False)
            task = self.loop.create_task(self._serve(kind, conn), name=f"{kind}-client")
            self.clients.add(task)
            task.add_done_callback(self.clients.discard)

    def refusal(self, peer: Peer) -> str | None:
        """Why this peer may not use the socket it connected to; None when it may."""
        trusted = peer.uid in (0, os.getuid())
        if peer.socket == LAUNCH:
            emperor = self.sup.drivers["uwsgi"].emperor.pid  # type: ignore[attr-defined]
            if trusted and emperor is not None and is_descendant(peer.pid, emperor):
                return None
            return "permission denied: only the launchers of the daemon's emperor use this socket"
        if trusted:
            return None
        group = self.sup.config.control_gid
        if group is not None and (peer.gid == group or group in _groups_of(peer.pid)):
            return None
        return "permission denied: not root and not in the control group"

    async def _serve(self, kind: str, conn: socket.socket) -> None:
        try:
            peer = Peer(kind, *peer_credentials(conn))
            refused = self.refusal(peer)
            if refused is not None:
                log.warning("%s: refused a client with uid %d (pid %d): %s", kind, peer.uid, peer.pid, refused)
                # take its request first, so that it is listening when the answer comes
                with contextlib.suppress(TimeoutError, OSError):
                    async with asyncio.timeout(1):
                        await self.loop.sock_recv(conn, protocol.MAX_REQUEST)
                await self._send(conn, error(refused))
                return
            buffer = b""
            while True:
                try:
                    async with asyncio.timeout(IDLE_TIMEOUT):
                        chunk = await self.loop.sock_recv(conn, 65536)
                except TimeoutError:
                    return
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not await self._handle_line(conn, line, peer):
                        return
                if len(buffer) > protocol.MAX_REQUEST:
                    await self._send(conn, error(f"request larger than {protocol.MAX_REQUEST} bytes"))
                    return
        except (ConnectionError, OSError):
            return
        finally:
            conn.close()

    async def _handle_line(self, conn: socket.socket, line: bytes, peer: Peer) -> bool:
        """Answer one request; False ends the connection."""
        try:
            request = protocol.decode_request(line)
        except ProtocolError as exc:
            await self._send(conn, error(f"bad request: {exc}"))
            return True
        cmd = request["cmd"]
        if protocol.COMMANDS[cmd].socket != peer.socket:
            await self._send(conn, error(f"{cmd!r} is not a command of the {peer.socket} socket"))
            return True
        try:
            result = await self.handlers[cmd](request, conn, peer)
        except (ClientGone, OSError):
            return False
        except Exception as exc:  # a bug must not take the daemon down
            log.exception("%s: %s failed", peer.socket, cmd)
            result = error(f"internal error: {exc}")
        if result is not None:
            await self._send(conn, result)
        return True

    async def _send(self, conn: socket.socket, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            async with asyncio.timeout(10):
                await self.loop.sock_sendall(conn, encode(message))

    # -- handlers ----------------------------------------------------------------

    def _stop_drain(self, names: list[str]) -> float:
        """--stop-drain for a stop by systemd (`systemctl stop wsgi@NAME`, or the daemon's unit
        stopping, which stops every wsgi@ unit first): the load balancer has the service out before
        it stops. Nothing to wait for when none of them is in rotation."""
        if any(in_rotation(self.sup.services[name]) is None for name in names):
            return self.sup.config.stop_drain
        return 0.0

    def _unknown(self, names: list[str]) -> dict[str, Any] | None:
        unknown = [n for n in names if n not in self.sup.services]
        if unknown:
            return error(
                f"unknown service{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
                f"(known: {', '.join(sorted(self.sup.services)) or 'none'})",
                EXIT_UNKNOWN,
                unknown=unknown,
            )
        return None

    async def _ping(self, request: dict[str, Any], conn: socket.socket, peer: Peer) -> dict[str, Any]:
        return {
            "ok": True,
            "pid": os.getpid(),
            "services": len(self.sup.services),
            "metrics": self.sup.metrics_address,
            "log_lines_dropped": self.sup.drops.count,
        }

    async def _status(self, request: dict[str, Any], conn: socket.socket, peer: Peer) -> dict[str, Any]:
        names = request.get("services") or []
        bad = self._unknown(names)
        if bad:
            return bad
        if request.get("fresh"):
            await self.sup.sampler.fresh()  # as a scrape does: bounded, else the last sample
        services = self.sup.status(names)
        if request.get("lines"):
            n = int(request.get("lines", 0))
            for info in services:
                svc = self.sup.services[info["name"]]
                info["last_lines"] = [line.text for line in svc.tail if not line.noise][-n:]
        code = 0 if all(s["state"] == "running" for s in services) else EXIT_NOT_RUNNING
        reply: dict[str, Any] = {"ok": True, "services": services, "code": code}
        if self.sup.groups.undelegated:  # about the host, not a service: beside the list, which stays a list
            reply["warnings"] = [self.sup.groups.undelegated]
        return reply

    async def _verb(self, request: dict[str, Any], conn: socket.socket, peer: Peer) -> dict[str, Any]:
        cmd = request["cmd"]
        names = list(request.get("services") or [])
        if request.get("all"):
            names = self.sup.manifest.start_order()
            if cmd == "stop":
                names.reverse()
        if not names:
            return error(f"{cmd}: name at least one service, or --all")
        bad = self._unknown(names)
        if bad:
            return bad
        drain = float(request.get("drain") or 0)
        if cmd == "stop" and request.get("by_unit"):
            drain = max(drain, self._stop_drain(names))
        if drain and cmd in ("stop", "restart", "reload"):
            await drain_first(self.sup, names, drain)
        futures = {name: self.sup.command(cmd, name) for name in names}
        if drain and cmd in ("stop", "restart", "reload"):
            # the drain was for this action only: back in rotation once it is done (a stopped
            # service is out of rotation anyway, and starts again in rotation)
            for name, future in futures.items():
                future.add_done_callback(lambda _, n=name: self.sup.command("undrain", n))
        if not request.get("wait", True):
            return {"ok": True, "results": {n: {"ok": True, "message": "requested"} for n in names}}
        timeout = float(request.get("timeout") or DEFAULT_WAIT)
        done, _ = await asyncio.wait(futures.values(), timeout=timeout)
        results = {}
        for name, future in futures.items():
            svc = self.sup.services[name]
            if future in done:
                ok, message = future.result()
            else:
                ok, message = False, f"still {svc.state} after {timeout:g}s"
                if svc.failures and svc.goal_running:
                    attempts = f"{svc.failures} failed attempt{'s' if svc.failures > 1 else ''}"
                    message += f" ({attempts}, the last: {svc.last_failure}; the daemon keeps retrying)"
            results[name] = {"ok": ok, "message": message, "state": str(svc.state)}
        all_ok = all(r["ok"] for r in results.values())
        return {"ok": all_ok, "results": results, "code": 0 if all_ok else EXIT_FAILED}

    async def _logs(self, request: dict[str, Any], conn: socket.socket, peer: Peer) -> dict[str, Any] | None:
        """Recent lines of services, merged in time order; with `follow`, new ones as they come."""
        names = list(request.get("services") or [])
        known = set(self.sup.services) | {DAEMON_NAME}
        unknown = [n for n in names if n not in known]
        if unknown:
            return error(f"unknown service: {', '.join(unknown)}", EXIT_UNKNOWN, unknown=unknown)
        if not names:
            names = sorted(known)
        wanted = set(names)
        n = int(request.get("n", 20))
        every = bool(request.get("verbose"))
        tails = [self.sup.logs.daemon_tail if name == DAEMON_NAME else self.sup.services[name].tail for name in names]
        lines = (line for tail in tails for line in tail if every or not line.noise)
        recent = sorted(lines, key=lambda line: line.ts)[-n:] if n else []
        for line in recent:
            await self._send(conn, _line_message(line))
        if not request.get("follow"):
            return {"ok": True, "end": True}
        queue: asyncio.Queue[LogLine] = asyncio.Queue(maxsize=FOLLOW_QUEUE)
        dropped = 0

        def sink(line: LogLine) -> None:
            nonlocal dropped
            if line.service in wanted and (every or not line.noise):
                try:
                    queue.put_nowait(line)
                except asyncio.QueueFull:
                    dropped += 1

        def message(line: LogLine) -> bytes:
            nonlocal dropped
            out = encode({"dropped": dropped}) if dropped else b""
            dropped = 0
            return out + encode(_line_message(line))

        self.sup.logs.sinks.append(sink)
        try:
            await self._stream(conn, queue, message)
        finally:
            self.sup.logs.sinks.remove(sink)

    async def _stack(self, request: dict[str, Any], conn: socket.socket, peer: Peer) -> dict[str, Any]:
        return await stacks(self.sup, str(request.get("service", "")))

    async def _reexec(self, request: dict[str, Any], conn: socket.socket, peer: Peer) -> None:
        await self._send(conn, {"ok": True, "pid": os.getpid()})
        self.loop.call_soon(self.sup.reexec)
        raise ClientGone

    async def _reload_config(self, request: dict[str, Any], conn: socket.socket, peer: Peer) -> dict[str, Any]:
        """The manifest read again and taken, then (`wait`, the default) its changes' results, for
        at most `timeout` seconds. A request without `timeout` waits until they are all done (as
        every wsgictl before --timeout asked). Giving up waiting cancels nothing."""
        taken = await self.reload_config()
        if isinstance(taken, dict):  # refused: nothing changed, whether or not the client waits
            return {**taken, "code": taken.get("code", EXIT_FAILED)}
        if not request.get("wait", True):
            return {"ok": True, "applying": True, "code": 0, **taken.summary}
        timeout = request.get("timeout")
        done, _ = await asyncio.wait({taken.outcome}, timeout=None if timeout is None else float(timeout))
        if not done:
            return error(self._still_applying(taken, float(timeout or 0)), timed_out=True, **taken.summary)
        result = taken.outcome.result()
        result.setdefault("code", 0 if result["ok"] else EXIT_FAILED)
        return result

    def _still_applying(self, taken: Applied, waited: float) -> str:
        """The one line for a reload-config that gave up waiting: what is not done yet, and that the
        daemon carries on."""
        states = []
        for name in taken.unfinished():
            svc = self.sup.services.get(name)
            state = str(svc.state) if svc is not None and name not in taken.summary["removed"] else "stopping"
            states.append(f"{name} is still {state}")
        pending = ", ".join(states) or "its last change is still under way"
        return (
            f"waited {waited:g}s: the manifest is applied, but not every change is done: {pending}; "
            "the daemon carries on (the reload is not cancelled): follow with `wsgictl status`"
        )

    async def _watch(self, request: dict[str, Any], conn: socket.socket, peer: Peer) -> None:
        """The state of one service now, then every change, until the client goes."""
        names = list(request.get("services") or [])
        if len(names) != 1 or names[0] not in self.sup.services:
            await self._send(conn, error(f"watch: name one known service, not {names}", EXIT_UNKNOWN))
            return None
        name = names[0]
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def listener(svc: Any) -> None:
            if svc.name == name:
                queue.put_nowait(self.sup.describe(svc))

        queue.put_nowait(self.sup.describe(self.sup.services[name]))
        self.sup.state_listeners.append(listener)
        try:
            await self._stream(conn, queue, encode)
        finally:
            self.sup.state_listeners.remove(listener)

    async def _stream(self, conn: socket.socket, queue: asyncio.Queue[Any], render: Any) -> None:
        """Send what arrives on `queue` until the client hangs up; then end the connection."""
        closed = self.loop.create_task(self.loop.sock_recv(conn, 1))
        try:
            while not closed.done():
                getter = self.loop.create_task(queue.get())
                await asyncio.wait([getter, closed], return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    break
                await self.loop.sock_sendall(conn, render(getter.result()))
        except OSError:
            pass
        finally:
            closed.cancel()
        raise ClientGone

    async def _launch(self, request: dict[str, Any], conn: socket.socket, peer: Peer) -> None:
        """A vassal's launcher asks for its service's socket; its pid becomes the master's, and the
        master gets a probe token of its own (state/probe_tokens.py), which no file holds."""
        name = str(request.get("service", ""))
        instance = str(request.get("instance", ""))
        ok, why = await self.sup.launched(name, peer.pid, instance)
        if not ok:
            await self._send(conn, error(why))
            raise ClientGone
        fd = self.sup.sockets.fd(name)
        group = await self.sup.drivers["uwsgi"].group_for_launch(name, instance)  # type: ignore[attr-defined]
        fds = [f for f in (fd, group) if f is not None]
        token = self.sup.probe_tokens.issue("uwsgi", name, instance)
        payload = encode({"ok": True, "probe_token": token, "group": group is not None})
        try:
            with contextlib.suppress(OSError):
                if not fds:
                    await self.loop.sock_sendall(conn, payload)
                else:
                    socket.send_fds(conn, [payload], fds)
        finally:
            if group is not None:
                os.close(group)
        raise ClientGone

    async def close(self) -> None:
        for task in self.accepting:
            task.cancel()
        for task in list(self.clients):
            task.cancel()
        for task in self.accepting:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.accepting.clear()
        for listener in self.listeners.values():
            listener.close()
        self.listeners.clear()


def _line_message(line: LogLine) -> dict[str, Any]:
    return {"ts": line.ts, "service": line.service, "stream": line.stream, "text": line.text, "priority": line.priority}
