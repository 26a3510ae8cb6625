"""The test delay proxy (tests/delayproxy.py) on loopback: it delays each way, keeps order, closes cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator

import pytest
from delayproxy import DelayProxy
from ports import free_port

DELAY = 0.05


class Peer:
    """A loopback server that records when each chunk arrived; echoes unless told not to."""

    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self.received: list[tuple[float, bytes]] = []
        self.eof_at: float | None = None
        self.got_data = asyncio.Event()
        self.port = 0
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                self.received.append((time.monotonic(), data))
                self.got_data.set()
                if self.echo:
                    writer.write(data)
                    await writer.drain()
            self.eof_at = time.monotonic()
        finally:
            writer.close()


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    p = Peer()
    p.server = await asyncio.start_server(p._handle, "127.0.0.1", 0)
    p.port = p.server.sockets[0].getsockname()[1]
    async with p.server:
        yield p


async def test_each_direction_is_delayed_by_the_one_way_delay(peer: Peer) -> None:
    async with DelayProxy(("127.0.0.1", peer.port), delay=DELAY) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        rtts, one_ways = [], []
        for i in range(7):
            t0 = time.monotonic()
            writer.write(b"ping %d\n" % i)
            line = await reader.readline()
            rtts.append(time.monotonic() - t0)
            assert line == b"ping %d\n" % i
            one_ways.append(peer.received[-1][0] - t0)
        # never early; and (the median, robust to a loaded machine's hiccup) not much late
        assert min(one_ways) >= DELAY and min(rtts) >= 2 * DELAY, (one_ways, rtts)
        assert statistics.median(one_ways) < DELAY + 0.015, one_ways
        assert statistics.median(rtts) < 2 * DELAY + 0.025, rtts
        assert proxy.nodelay_flags() and all(proxy.nodelay_flags()), proxy.nodelay_flags()
        writer.close()
        await writer.wait_closed()


async def test_jitter_keeps_byte_order(peer: Peer) -> None:
    sent = b"".join(b"%06d\n" % i for i in range(2000))
    async with DelayProxy(("127.0.0.1", peer.port), delay=0.02, jitter=0.015, seed=1) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        for i in range(0, len(sent), 700):  # many chunks, each with its own random delay
            writer.write(sent[i:i + 700])
            await writer.drain()
            await asyncio.sleep(0.003)
        writer.write_eof()
        got = await asyncio.wait_for(reader.read(), 10)  # to the end: the echo's FIN came back
        assert got == sent
        assert len(peer.received) > 1  # released in several pieces, at different times
        assert proxy.bytes_up == proxy.bytes_down == len(sent)
        writer.close()


async def test_a_half_close_crosses_after_the_delay_and_the_connection_closes(peer: Peer) -> None:
    async with DelayProxy(("127.0.0.1", peer.port), delay=DELAY) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"last words")
        t0 = time.monotonic()
        writer.write_eof()
        assert await reader.read() == b"last words"  # echoed, then the server's close came back
        assert peer.eof_at is not None and peer.eof_at - t0 >= DELAY
        assert time.monotonic() - t0 >= 2 * DELAY
        writer.close()
        await writer.wait_closed()
        await _closed(proxy)
        assert proxy.accepted == 1


async def test_closing_the_proxy_ends_open_connections() -> None:
    silent = Peer(echo=False)
    server = await asyncio.start_server(silent._handle, "127.0.0.1", 0)
    async with server:
        async with DelayProxy(("127.0.0.1", server.sockets[0].getsockname()[1]), delay=DELAY,
                              nodelay=False) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"x")
            await asyncio.wait_for(silent.got_data.wait(), 2)
            assert proxy.nodelay_flags() == [0, 0]  # Nagle left on when asked
        assert proxy.open == 0
        async with asyncio.timeout(2):  # an end of stream or a reset, not a hang
            with contextlib.suppress(ConnectionResetError):
                assert await reader.read() == b""
        writer.close()


async def test_an_unreachable_target_closes_the_client() -> None:
    async with DelayProxy(("127.0.0.1", free_port()), delay=DELAY) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        async with asyncio.timeout(2):
            with contextlib.suppress(ConnectionResetError):
                assert await reader.read() == b""
        assert proxy.accepted == 1 and proxy.open == 0
        writer.close()



async def _closed(proxy: DelayProxy, timeout: float = 2.0) -> None:
    """Wait until the proxy has no open connection."""
    async with asyncio.timeout(timeout):
        while True:
            if not proxy.open:
                return
            await asyncio.sleep(0.01)
