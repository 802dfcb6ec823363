"""A minimal HTTP/1.1 server on asyncio streams: keep-alive, chunked streams, drops and holds.

Hand-rolled rather than a framework because the simulator must cost well under a
millisecond per request and must misbehave on purpose — close a socket without a reply,
hold a connection silent, cut a stream — which frameworks make hard. ``TCP_NODELAY`` is
set on every accepted socket: without it Nagle plus delayed ACK add ~40 ms to each call.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl

__all__ = [
    "DropConnection",
    "FullResponse",
    "HoldConnection",
    "HttpRequest",
    "HttpResponse",
    "HttpServer",
    "StreamResponse",
]

_MAX_HEAD = 1 << 20
_REASONS = {s.value: s.phrase for s in HTTPStatus}


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One parsed request; header names are lower-case."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class FullResponse:
    """A complete body with ``Content-Length``, sent after ``first_byte`` seconds."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    first_byte: float = 0.0


@dataclass(frozen=True, slots=True)
class StreamResponse:
    """A chunked body, one chunk per frame, ``per_chunk`` seconds apart."""

    status: int
    frames: Sequence[bytes]
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)
    first_byte: float = 0.0
    per_chunk: float = 0.0


@dataclass(frozen=True, slots=True)
class DropConnection:
    """Close the connection without replying (after ``delay`` seconds)."""

    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class HoldConnection:
    """Stay silent for ``seconds`` or until the client hangs up, then close."""

    seconds: float


HttpResponse = FullResponse | StreamResponse | DropConnection | HoldConnection
Handler = Callable[[HttpRequest], HttpResponse]


class HttpServer:
    """Serves ``handler`` on ``host:port`` (port 0: a free one) in the running event loop.

    The handler is synchronous: it decides the answer; this class only paces and writes it.
    """

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        """Bind later, in :meth:`start`."""
        self.handler = handler
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen; ``self.port`` is the bound port afterwards."""
        self._server = await asyncio.start_server(
            self._connection, self.host, self.port, limit=_MAX_HEAD, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and end every open connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                request, keep_alive = await self._read_request(reader, writer)
                if request is None:
                    return
                try:
                    response: HttpResponse = self.handler(request)
                except Exception as exc:  # a bug or a failing Reply.function: say so, go on
                    body = f'{{"error": {{"message": "simulator error: {type(exc).__name__}"}}}}'
                    response = FullResponse(500, body.encode())
                if not await self._send(reader, writer, response, keep_alive):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:  # server closing; asyncio 3.11 logs a re-raise here
            return
        finally:
            self._connections.discard(task)
            writer.close()

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[HttpRequest | None, bool]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None, False
        except asyncio.LimitOverrunError:
            writer.write(_head(431, "text/plain", {}, 0, keep_alive=False))
            return None, False
        lines = head[:-4].decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            writer.write(_head(400, "text/plain", {}, 0, keep_alive=False))
            return None, False
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        try:
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body = await _read_chunked(reader)
            else:
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length > 0 else b""
        except (ValueError, asyncio.LimitOverrunError):
            writer.write(_head(400, "text/plain", {}, 0, keep_alive=False))
            return None, False
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        path, _, query = target.partition("?")
        return HttpRequest(method, path, dict(parse_qsl(query)), headers, body), keep_alive

    async def _send(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        response: HttpResponse,
        keep_alive: bool,
    ) -> bool:
        """Write ``response``; whether the connection stays open for the next request."""
        if isinstance(response, FullResponse):
            if response.first_byte:
                await asyncio.sleep(response.first_byte)
            writer.write(
                _head(
                    response.status,
                    response.content_type,
                    response.headers,
                    len(response.body),
                    keep_alive,
                )
                + response.body
            )
            await writer.drain()
            return keep_alive
        if isinstance(response, StreamResponse):
            if response.first_byte:
                await asyncio.sleep(response.first_byte)
            writer.write(
                _head(response.status, response.content_type, response.headers, None, keep_alive)
            )
            for index, frame in enumerate(response.frames):
                if response.per_chunk and index:
                    await writer.drain()
                    await asyncio.sleep(response.per_chunk)
                if frame:
                    writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return keep_alive
        if isinstance(response, DropConnection):
            if response.delay:
                await asyncio.sleep(response.delay)
            return False
        # HoldConnection: wait for the client to give up (EOF) or for the time to pass.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + response.seconds
        while (remaining := deadline - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(reader.read(65536), remaining)
            except TimeoutError:
                break
            if not data:
                break
        return False


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _head(
    status: int,
    content_type: str,
    headers: Mapping[str, str],
    length: int | None,
    keep_alive: bool,
) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
        f"content-type: {content_type}",
    ]
    if length is None:
        lines.append("transfer-encoding: chunked")
    else:
        lines.append(f"content-length: {length}")
    lines.append("connection: keep-alive" if keep_alive else "connection: close")
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
