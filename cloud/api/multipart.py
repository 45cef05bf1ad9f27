"""Streaming the `file` part of a multipart/form-data body into the file store.

Starlette's form parser would first spool the whole upload to a temp file of its own and only then
call us; this reads the request body as it arrives, so the size limit applies while streaming, memory
stays flat, and the bytes are written (and hashed) once. Hashing and writing run in a worker thread of
the upload's own, a megabyte at a time and a few megabytes behind the network, so receiving and
writing overlap and the event loop keeps serving other requests.
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from cloud.api.guard import idle_bounded
from cloud.services.errors import BadRequest
from files.store import CHUNK, BlobWriter, FileStore, Received

FIELD = "file"


@dataclass
class Upload:
    received: Received
    filename: str | None
    content_type: str | None


@dataclass
class _PartState:
    """What the parser callbacks learn about the current part, and the bytes waiting to be written."""

    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    headers: dict[str, str] = field(default_factory=dict)
    in_file: bool = False
    seen_file: bool = False
    filename: str | None = None
    content_type: str | None = None
    buffer: bytearray = field(default_factory=bytearray)

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self.header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self.header_value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self.headers.clear()

    def _header_end(self) -> None:
        # Latin-1 keeps every byte as one character, so the parameters below get back the bytes sent:
        # python-multipart's parse_options_header encodes a str value as Latin-1 (a filename decoded as
        # UTF-8 first, like `部署.sql`, made it raise).
        self.headers[self.header_field.decode("latin-1").lower()] = self.header_value.decode("latin-1")
        self.header_field.clear()
        self.header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get("content-disposition", ""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        self.in_file = name == FIELD and not self.seen_file  # only the first `file` part counts
        if self.in_file:
            self.seen_file = True
            raw = options.get(b"filename")
            self.filename = _decode_filename(raw) if raw is not None else None
            self.content_type = self.headers.get("content-type")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:
            self.buffer.extend(data[start:end])

    def _part_end(self) -> None:
        self.in_file = False


def _decode_filename(raw: bytes) -> str:
    """Browsers and curl send the filename as UTF-8 (RFC 7578 §4.2); an old client's Latin-1 still reads."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


async def receive_file(
    request: Request, store: FileStore, max_bytes: int, idle_timeout: float = 30.0, min_rate: int = 1024
) -> Upload:
    """Stream the request's `file` part into a temp file of the store; raises BadRequest, TooLarge,
    or HTTPException (408 for a stalled client), and leaves no temp file behind when it raises."""
    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise BadRequest("body: expected multipart/form-data with a `file` part (curl -F file=@path)")
    state = _PartState()
    writer = _Pipeline(store.writer(max_bytes))
    try:
        parser = MultipartParser(boundary, state.callbacks())  # type: ignore[arg-type]
        async for chunk in idle_bounded(request, idle_timeout, min_rate):
            parser.write(chunk)
            if len(state.buffer) >= CHUNK:
                await writer.write(state.buffer)
        parser.finalize()
        if not state.seen_file:
            raise BadRequest("file: is required (a multipart part named `file`, as curl -F file=@path sends)")
        await writer.write(state.buffer)
        received = await writer.finish()
    except FormParserError as exc:
        await writer.discard()
        raise BadRequest(f"body: malformed multipart data ({exc})") from exc
    except BaseException:
        await writer.discard()
        raise
    return Upload(received, state.filename, state.content_type)


class _Pipeline:
    """Feeds a BlobWriter from one worker thread, in order, with at most MAX_IN_FLIGHT chunks queued."""

    MAX_IN_FLIGHT = 4

    def __init__(self, blob: BlobWriter) -> None:
        self.blob = blob
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload")
        self._queued: deque[asyncio.Future[None]] = deque()

    async def write(self, buffer: bytearray) -> None:
        if not buffer:
            return
        data = bytes(buffer)
        buffer.clear()
        self._queued.append(asyncio.get_running_loop().run_in_executor(self._pool, self.blob.write, data))
        while len(self._queued) > self.MAX_IN_FLIGHT:
            await self._queued.popleft()  # raises TooLarge from the writer

    async def finish(self) -> Received:
        while self._queued:
            await self._queued.popleft()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self.blob.finish)
        finally:
            self._pool.shutdown(wait=False)

    async def discard(self) -> None:
        # Let queued writes settle first, so the file is not removed under the worker's feet.
        await asyncio.gather(*self._queued, return_exceptions=True)
        self._queued.clear()
        self._pool.shutdown(wait=True)
        self.blob.discard()
