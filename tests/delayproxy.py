"""A userspace TCP delay proxy for tests: a slow link where the kernel has no ``netem``.

::

    async with DelayProxy(("127.0.0.1", 1883), delay=0.025, jitter=0.005) as proxy:
        ...   # connect to ("127.0.0.1", proxy.port): every byte arrives 20-30 ms later, each way

    python tests/delayproxy.py 127.0.0.1:18830 10.231.0.1:1883 --delay 0.025 [--jitter 0.005]

Each accepted connection gets its own connection to the target; what one
side sends is written to the other ``delay`` seconds (plus a uniform
``±jitter``) after it was read.  Bytes keep their order: a chunk is never
released before the one read before it, so jitter stretches gaps but never
reorders.  An end of stream (FIN) is passed on after the same delay
(``write_eof``), so a half-close and a close cross the link as late as data;
a reset or an error on one side closes both at once, dropping what was not
yet due, as does closing the proxy.  Both sockets of a connection
have ``TCP_NODELAY`` (unless ``nodelay=False``), so the proxy itself adds no
Nagle stall.  What was read waits in memory until it is due: no flow
control beyond what TCP does on each side (enough for tests' traffic).

It ends TCP on each side, so acknowledgements do not cross the delay: a
sender's Nagle wait for an ACK, its congestion window and retransmissions see
a fast local peer.  Latency added to data is faithful; TCP's own reaction to
a long round trip is not (netem, which delays packets, shows that).

Run as a script (inside a network namespace with ``ip netns exec``) it serves
until SIGTERM and writes one line per connection opened and closed to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import socket
import sys
from types import TracebackType

__all__ = ["DelayProxy", "main"]

#: Bytes read at a time from either side.
CHUNK = 65536


class DelayProxy:
    """Listens on ``listen`` and forwards each connection to ``target`` with a one-way delay each way."""

    def __init__(self, target: tuple[str, int], *, delay: float, jitter: float = 0.0,
                 listen: tuple[str, int] = ("127.0.0.1", 0), nodelay: bool = True,
                 seed: int | None = None, verbose: bool = False) -> None:
        if delay < 0 or jitter < 0:
            raise ValueError("delay and jitter must not be negative")
        self.target = target
        self.listen = listen
        self.delay = delay
        self.jitter = jitter
        self.nodelay = nodelay
        self.verbose = verbose
        self.port = 0
        #: Connections accepted, open now, and bytes forwarded client -> target (up) and back (down).
        self.accepted = 0
        self.open = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self._random = random.Random(seed)
        self._tg: asyncio.TaskGroup | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> DelayProxy:
        tg = asyncio.TaskGroup()
        await tg.__aenter__()
        self._tg = tg
        try:
            self._server = await asyncio.start_server(self._accept, self.listen[0], self.listen[1])
        except BaseException as err:
            await tg.__aexit__(type(err), err, err.__traceback__)
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.aclose_nowait()
        tg, self._tg = self._tg, None
        if tg is not None:
            await tg.__aexit__(et, ev, tb)

    def aclose_nowait(self) -> None:
        """Stop listening and abort every open connection (their tasks are cancelled)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()

    def nodelay_flags(self) -> list[int]:
        """``TCP_NODELAY`` of each open connection's sockets (both sides of each)."""
        return [w.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                for w in self._writers if w.get_extra_info("socket") is not None]

    def _sample(self) -> float:
        if not self.jitter:
            return self.delay
        return max(0.0, self.delay + self._random.uniform(-self.jitter, self.jitter))

    def _log(self, text: str) -> None:
        if self.verbose:
            print(f"delayproxy: {text}", flush=True)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tg is None:
            writer.transport.abort()
            return
        self.accepted += 1
        peer = writer.get_extra_info("peername")
        task = self._tg.create_task(self._connection(reader, writer), name=f"delayproxy[{peer}]")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connection(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        peer = cwriter.get_extra_info("peername")
        self._writers.add(cwriter)
        self.open += 1
        swriter: asyncio.StreamWriter | None = None
        clean = False
        try:
            sreader, swriter = await asyncio.open_connection(*self.target)
            self._writers.add(swriter)
            for w in (cwriter, swriter):  # asyncio sets TCP_NODELAY itself; clear it when asked to
                w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(self.nodelay))
            self._log(f"open {peer} -> {self.target[0]}:{self.target[1]}")
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pipe(creader, swriter, up=True), name="delayproxy.up")
                tg.create_task(self._pipe(sreader, cwriter, up=False), name="delayproxy.down")
            clean = True
        except* OSError as group:  # the connection's boundary: a refused target, a reset; abort both sides
            first: BaseException = group
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            self._log(f"error {peer}: {type(first).__name__}: {first}")
        finally:
            for side in (cwriter, swriter):
                if side is not None:
                    self._writers.discard(side)
                    if clean:
                        side.close()
                    else:
                        side.transport.abort()
            self.open -= 1
            self._log(f"closed {peer} (all connections: up {self.bytes_up} bytes, down {self.bytes_down})")

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        """Read from one side; a sender task writes each chunk to the other when it is due."""
        loop = asyncio.get_running_loop()
        due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._send(due, writer, up=up), name="delayproxy.send")
            last = 0.0
            while True:
                data = await reader.read(CHUNK)
                last = max(last, loop.time() + self._sample())  # never before the previous chunk
                due.put_nowait((last, data))
                if not data:
                    break

    async def _send(self, due: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter, *,
                    up: bool) -> None:
        loop = asyncio.get_running_loop()
        while True:
            when, data = await due.get()
            wait = when - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof() and not writer.is_closing():
                    with contextlib.suppress(OSError):  # the other side is gone already (ENOTCONN)
                        writer.write_eof()
                return
            writer.write(data)
            if up:
                self.bytes_up += len(data)
            else:
                self.bytes_down += len(data)
            await writer.drain()


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected ADDR:PORT, not {text!r}")
    return host, int(port)


async def main(argv: list[str] | None = None) -> None:
    """Serve one proxy until SIGTERM or SIGINT."""
    ap = argparse.ArgumentParser(prog="delayproxy", description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("listen", type=_hostport, help="ADDR:PORT to listen on")
    ap.add_argument("target", type=_hostport, help="ADDR:PORT to forward to")
    ap.add_argument("--delay", type=float, required=True, help="one-way delay in seconds, each direction")
    ap.add_argument("--jitter", type=float, default=0.0, help="uniform +- jitter in seconds (order is kept)")
    ap.add_argument("--no-nodelay", action="store_true", help="leave Nagle's algorithm on (for comparison)")
    args = ap.parse_args(argv)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with DelayProxy(args.target, delay=args.delay, jitter=args.jitter, listen=args.listen,
                          nodelay=not args.no_nodelay, verbose=True) as proxy:
        print(f"delayproxy: listening on {args.listen[0]}:{proxy.port} -> {args.target[0]}:{args.target[1]}, "
              f"delay {args.delay * 1000:g} ms ± {args.jitter * 1000:g} ms each way, "
              f"TCP_NODELAY {'off' if args.no_nodelay else 'on'}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
