"""A loopback TCP proxy a test can cut and restore (a database outage without stopping it), or
slow down (every byte from upstream arrives ``delay_s`` late: an overloaded server)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.server: asyncio.Server | None = None
        self.port = 0
        self.cut_off = False
        self.delay_s = 0.0  # added to every answer from upstream (latency, not bandwidth)
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self.port

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:  # the database is "down": connections are refused at once
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        pipes = [asyncio.create_task(self._pipe(reader, up_writer)),
                 asyncio.create_task(self._pipe(up_reader, writer, late=True))]
        self._pipes.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)
        self._pipes.difference_update(pipes)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                    late: bool = False) -> None:
        """Copy ``reader`` to ``writer``; with ``late``, each chunk is held until ``delay_s``
        after it arrived (read as it arrives, so a slow answer does not hold up the ones behind
        it longer than the delay)."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(chunks, writer))
        try:
            while data := await reader.read(65536):
                chunks.put_nowait((loop.time() + (self.delay_s if late else 0.0), data))
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            sender.cancel()
            raise
        chunks.put_nowait((0.0, b""))  # the reader closed: send what is left, then close
        await sender

    async def _send(self, chunks: asyncio.Queue[tuple[float, bytes]],
                         writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                due, data = await chunks.get()
                if not data:
                    break
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)  # the injected latency itself
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)

    def cut(self) -> None:
        """Drop every open connection and refuse new ones until restore()."""
        self.cut_off = True
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        log.info("proxy :%d cut", self.port)

    def restore(self) -> None:
        self.cut_off = False
        log.info("proxy :%d restored", self.port)

    async def stop(self) -> None:
        self.cut()
        for task in list(self._pipes):
            task.cancel()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
