"""Frames of the IPC protocol (docs/PROTOCOL.md, "Frames").

    u32 LE frameLength   bytes after this field
    u32 LE headerLength  bytes of the JSON header
    bytes  header        UTF-8 JSON object with "t" (and "rid" on requests)
    bytes  payload       the rest: inline object bytes, may be empty
"""

from __future__ import annotations

import json
import struct

from .errors import TrellisError

_U32 = struct.Struct("<I")
# The store refuses larger frames anyway; a client refuses to buffer an answer past this.
MAX_ANSWER = 1 << 30


def encode(header: dict, payload: bytes | memoryview = b"") -> bytes:
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    return b"".join((_U32.pack(4 + len(text) + len(payload)), _U32.pack(len(text)), text, payload))


def decode_body(body: memoryview) -> tuple[dict, memoryview]:
    """One frame without its length prefix: its header (checked to be an object with a string "t") and payload."""
    if len(body) < 4:
        raise TrellisError("ERR_PROTOCOL", f"frame length {len(body)} is too short")
    (hlen,) = _U32.unpack_from(body, 0)
    if hlen > len(body) - 4:
        raise TrellisError("ERR_PROTOCOL", f"header length {hlen} exceeds frame length {len(body) - 4}")
    try:
        header = json.loads(bytes(body[4 : 4 + hlen]))
    except ValueError:
        raise TrellisError("ERR_PROTOCOL", "frame header is not valid JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("t"), str):
        raise TrellisError("ERR_PROTOCOL", 'frame header must be a JSON object with a string "t"')
    return header, body[4 + hlen :]


class FrameReader:
    """Cuts whole frames out of the bytes a socket delivers."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def push(self, data: bytes) -> None:
        self._buf += data

    def next(self) -> tuple[dict, memoryview] | None:
        if len(self._buf) < 4:
            return None
        (length,) = _U32.unpack_from(self._buf, 0)
        if length > MAX_ANSWER:
            raise TrellisError("ERR_PROTOCOL", f"frame of {length} bytes exceeds the maximum of {MAX_ANSWER}")
        if len(self._buf) < 4 + length:
            return None
        body = bytes(self._buf[4 : 4 + length])
        del self._buf[: 4 + length]
        return decode_body(memoryview(body))
