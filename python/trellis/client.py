"""The IPC client: one UNIX socket for requests, segment fds fetched over the fd channel.

Every request is answered in order here (this client waits for each answer
before it sends the next), so a rid only has to match the one in flight.
Segments are mapped once per client: read-only for get, read-write the first
time put needs one.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import re
import socket
import weakref
from dataclasses import dataclass, field

import numpy as np

from . import frame
from .dtypes import DTYPES, numpy_dtype, trellis_dtype
from .errors import TrellisError

PROTOCOL_VERSION = 1
_ID = re.compile(r"^o[0-9a-f]{16}$")
_FDS_AT_ONCE = 64


def is_object_id(s: object) -> bool:
    return isinstance(s, str) and _ID.match(s) is not None


@dataclass
class StoredObject:
    """An object that is neither a Tensor nor a Blob (a Shard, an Arrow table...): its record and decoded members."""

    id: str
    typename: str
    nbytes: int
    meta: dict
    members: list = field(default_factory=list)


class _Segment:
    def __init__(self, seg_id: int, size: int, fd: int):
        self.id = seg_id
        self.size = size
        self.fd = fd
        self.ro = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ) if size > 0 else None
        self.rw: mmap.mmap | None = None

    def writable(self) -> mmap.mmap:
        if self.rw is None:
            self.rw = mmap.mmap(self.fd, self.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        return self.rw

    def close_fd(self) -> None:
        # The mmaps keep their own reference (Python dups the fd); arrays over them stay readable.
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class TensorWriter:
    """A tensor allocated in the store, to be filled in place: write ``array``, then ``seal``."""

    def __init__(self, client: "Client", blob_id: str, dtype: str, shape: tuple[int, ...], array: np.ndarray):
        self._client = client
        self.id = blob_id
        self.dtype = dtype
        self.shape = shape
        self.array = array
        self._done = False

    def seal(self, name: str | None = None, persist: bool = False) -> str:
        """Makes the tensor immutable (and binds ``name``); returns the Tensor's id."""
        self._check()
        body = {
            "t": "seal",
            "id": self.id,
            "object": {"typename": "Tensor", "meta": {"dtype": self.dtype, "shape": list(self.shape)}, "members": []},
            "persist": persist,
        }
        if name is not None:
            body["name"] = name
        answer = self._client._call(body)
        self._done = True
        return _id_field(answer, "id")

    def abort(self) -> None:
        self._check()
        self._client._call({"t": "abort", "id": self.id})
        self._done = True

    def _check(self) -> None:
        if self._done:
            raise TrellisError("ERR_ALREADY_SEALED", f"tensor {self.id} was already sealed or aborted")


class Client:
    """A connection to one store. Use ``trellis.connect(path)``; close it (or use ``with``) when done."""

    def __init__(self, path: str, name: str | None = None, timeout: float = 10.0):
        self.socket_path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except OSError as e:
            self._sock.close()
            raise TrellisError("ERR_DISCONNECTED", f"cannot connect to the store at {path}: {e.strerror or e}") from None
        self._sock.settimeout(None)
        self._reader = frame.FrameReader()
        self._rid = 0
        self._closed = False
        self._segments: dict[int, _Segment] = {}
        self._held: dict[str, int] = {}
        # id(array) -> (weakref to the array, object id): lets release() take the array get returned.
        self._arrays: dict[int, tuple[weakref.ref, str]] = {}
        try:
            hello = self._call({"t": "hello", "version": PROTOCOL_VERSION, "client": name or f"python pid {os.getpid()}"})
        except BaseException:
            self._sock.close()
            raise
        self._token = _str_field(hello, "token")
        self.store_id = _str_field(hello, "storeId")
        self.instance_id = _uint_field(hello, "instanceId")
        self.inline_limit = _uint_field(hello, "inlineLimit")
        self.name = hello.get("name")

    # ---- context manager ------------------------------------------------

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection; the store drops this client's pins. Safe to call twice.

        Arrays handed out stay readable (the mappings live while they do), but
        after their release the store may reuse that memory.
        """
        if self._closed:
            return
        self._closed = True
        self._held.clear()
        self._arrays.clear()
        self._sock.close()
        for s in self._segments.values():
            s.close_fd()

    # ---- reading --------------------------------------------------------

    def get(self, name_or_id: str):
        """A read-only numpy array over the store's memory (no copy), dtype and shape kept.

        The object stays pinned until ``release`` (or close); until then the
        array's bytes cannot change or be freed. A Blob comes back as a 1-d
        uint8 array; other objects as a ``StoredObject`` with decoded members.
        """
        oid = name_or_id if is_object_id(name_or_id) else self.get_name(name_or_id)
        answer = self._call({"t": "get", "ids": [oid]})
        objects = answer.get("objects")
        if not isinstance(objects, list) or len(objects) != 1 or not isinstance(objects[0], dict):
            raise TrellisError("ERR_PROTOCOL", "the store's answer to get is malformed: objects")
        tree = objects[0]
        try:
            self._map_segments(_segments_of(tree))
            value = self._decode(tree)
        except BaseException:
            self._send({"t": "release", "ids": [oid]}, no_reply=True)
            raise
        self._held[oid] = self._held.get(oid, 0) + 1
        if isinstance(value, np.ndarray):
            key = id(value)
            self._arrays[key] = (weakref.ref(value, lambda _r, k=key: self._arrays.pop(k, None)), oid)
        return value

    @contextlib.contextmanager
    def pinned(self, name_or_id: str):
        """``with c.pinned("x") as a:`` -- get, then release when the block ends."""
        value = self.get(name_or_id)
        try:
            yield value
        finally:
            if not self._closed:
                self.release(value if isinstance(value, np.ndarray) else value.id)

    def release(self, obj) -> None:
        """Gives back one pin taken by ``get``: an object id, or the array get returned."""
        self._check_open()
        oid = obj
        if isinstance(obj, np.ndarray):
            entry = self._arrays.get(id(obj))
            if entry is None or entry[0]() is not obj:
                raise TrellisError("ERR_NOT_REFERENCED", "this array did not come from this client's get")
            oid = entry[1]
        elif isinstance(obj, StoredObject):
            oid = obj.id
        count = self._held.get(oid, 0)
        if count == 0:
            raise TrellisError("ERR_NOT_REFERENCED", f"this client holds no reference to {oid}")
        if count > 1:
            self._held[oid] = count - 1
            return
        del self._held[oid]
        if isinstance(obj, np.ndarray):
            self._arrays.pop(id(obj), None)
        # Sent without an answer, like the Node client: the store handles this connection's frames in order.
        self._send({"t": "release", "ids": [oid]}, no_reply=True)

    @property
    def held_count(self) -> int:
        return len(self._held)

    # ---- writing --------------------------------------------------------

    def create_tensor(self, dtype: str, shape) -> TensorWriter:
        """Allocates a tensor in the store and maps it writable here: fill ``w.array``, then ``w.seal()``."""
        if dtype not in DTYPES:
            raise TrellisError("ERR_BAD_REQUEST", f"Expected dtype to be one of {', '.join(DTYPES)} but received {dtype!r}")
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise TrellisError("ERR_BAD_REQUEST", f"Expected shape to be non-negative integers but received {shape}")
        dt = DTYPES[dtype]
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        answer = self._call({"t": "create", "size": nbytes})
        blob_id = _id_field(answer, "id")
        try:
            seg, off, size = _location(answer.get("blob"), "blob")
            if size != nbytes:
                raise TrellisError("ERR_PROTOCOL", f"create answered a blob of {size} bytes for {nbytes}")
            if size == 0:
                array = np.zeros(shape, dt)
            else:
                self._map_segments({seg})
                array = np.ndarray(shape, dt, buffer=self._segments[seg].writable(), offset=off)
        except BaseException:
            self._call({"t": "abort", "id": blob_id})
            raise
        return TensorWriter(self, blob_id, dtype, shape, array)

    def put(self, array, name: str | None = None, persist: bool = False) -> str:
        """Stores an array as a Tensor, written straight into the store's memory, and seals it; returns its id.

        ``name`` binds a name in the same request. Small arrays (up to the
        store's inline limit) travel inside the request instead.
        """
        a = np.asarray(array)
        dtype = trellis_dtype(a.dtype)
        if a.nbytes <= self.inline_limit:
            payload = np.ascontiguousarray(a, DTYPES[dtype]).tobytes()
            body = {
                "t": "put",
                "object": {"typename": "Tensor", "meta": {"dtype": dtype, "shape": list(a.shape)}, "members": []},
                "persist": persist,
            }
            if name is not None:
                body["name"] = name
            return _id_field(self._call(body, payload), "id")
        w = self.create_tensor(dtype, a.shape)
        try:
            w.array[...] = a
            return w.seal(name=name, persist=persist)
        except BaseException:
            with contextlib.suppress(TrellisError):
                if not w._done:
                    w.abort()
            raise

    # ---- names and objects ----------------------------------------------

    def get_name(self, name: str, wait: bool = False, timeout_ms: int = 0) -> str:
        return _id_field(self._call({"t": "getName", "name": name, "wait": wait, "timeoutMs": timeout_ms}), "id")

    def put_name(self, name: str, object_id: str, overwrite: bool = False) -> None:
        self._call({"t": "putName", "name": name, "id": object_id, "overwrite": overwrite})

    def drop_name(self, name: str) -> str:
        return _id_field(self._call({"t": "dropName", "name": name}), "id")

    def names(self, prefix: str = "") -> dict[str, str]:
        names = self._call({"t": "listNames", "prefix": prefix}).get("names")
        if not isinstance(names, dict) or not all(is_object_id(v) for v in names.values()):
            raise TrellisError("ERR_PROTOCOL", "the store's answer to listNames is malformed: names")
        return names

    def delete(self, object_id: str, deep: bool = True) -> None:
        self._call({"t": "delete", "ids": [object_id], "deep": deep})

    def list(self, typename: str | None = None) -> list[dict]:
        """Summaries of this store's objects, oldest first (every page)."""
        out: list[dict] = []
        cursor = None
        while True:
            body = {"t": "list"}
            if typename is not None:
                body["typename"] = typename
            if cursor is not None:
                body["cursor"] = cursor
            answer = self._call(body)
            objects = answer.get("objects")
            if not isinstance(objects, list):
                raise TrellisError("ERR_PROTOCOL", "the store's answer to list is malformed: objects")
            out.extend(objects)
            cursor = answer.get("next")
            if cursor is None:
                return out

    def status(self) -> dict:
        status = self._call({"t": "status"}).get("status")
        if not isinstance(status, dict):
            raise TrellisError("ERR_PROTOCOL", "the store's answer to status is malformed: status")
        return status

    # ---- decoding ---------------------------------------------------------

    def _decode(self, tree: dict):
        typename = tree.get("typename")
        members = tree.get("members")
        if not isinstance(members, list):
            raise TrellisError("ERR_PROTOCOL", f"object {tree.get('id')} has no member list")
        if typename == "Blob":
            seg, off, size = _location(tree.get("blob"), "blob")
            return self._view(seg, off, size, np.dtype(np.uint8), (size,))
        if typename == "Tensor":
            meta = tree.get("meta") or {}
            dt = numpy_dtype(meta.get("dtype"))
            shape = meta.get("shape")
            if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
                raise TrellisError("ERR_PROTOCOL", f"object {tree.get('id')} has bad tensor metadata")
            if not members or members[0].get("typename") != "Blob":
                raise TrellisError("ERR_PROTOCOL", f"tensor {tree.get('id')} has no data blob")
            seg, off, size = _location(members[0].get("blob"), "blob")
            if int(np.prod(shape, dtype=np.int64)) * dt.itemsize != size:
                raise TrellisError("ERR_SIZE_MISMATCH", f"tensor {tree.get('id')}: {size} bytes for shape {shape}")
            return self._view(seg, off, size, dt, tuple(shape))
        return StoredObject(
            id=tree.get("id"),
            typename=typename,
            nbytes=tree.get("nbytes"),
            meta=tree.get("meta") or {},
            members=[self._decode(m) for m in members],
        )

    def _view(self, seg: int, off: int, size: int, dt: np.dtype, shape: tuple) -> np.ndarray:
        if size == 0:
            a = np.zeros(shape, dt)
            a.flags.writeable = False
            return a
        s = self._segments.get(seg)
        if s is None or off + size > s.size:
            raise TrellisError("ERR_PROTOCOL", f"blob at {seg}:{off}+{size} lies outside the mapped segments")
        # frombuffer over a read-only mmap: a read-only array whose base keeps the mapping alive.
        return np.frombuffer(s.ro, dtype=dt, count=size // dt.itemsize, offset=off).reshape(shape)

    # ---- the fd channel ---------------------------------------------------

    def _map_segments(self, segs: set[int]) -> None:
        missing = sorted(s for s in segs if s not in self._segments)
        for i in range(0, len(missing), _FDS_AT_ONCE):
            self._fetch_fds(missing[i : i + _FDS_AT_ONCE])

    def _fetch_fds(self, segs: list[int]) -> None:
        """One fd-channel exchange: a second, short connection that answers with the segments' memfds."""
        request = frame.encode({"t": "fds", "rid": 0, "token": self._token, "segments": segs})
        fds: list[int] = []
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as ch:
            ch.settimeout(10.0)
            try:
                ch.connect(self.socket_path)
                ch.sendall(request)
                reader = frame.FrameReader()
                got = None
                while got is None:
                    data, more_fds, flags, _ = socket.recv_fds(ch, 1 << 16, len(segs))
                    fds.extend(more_fds)
                    if flags & getattr(socket, "MSG_CTRUNC", 0x8):
                        raise TrellisError("ERR_PROTOCOL", "the fd channel's control message was cut short")
                    if not data:
                        raise TrellisError("ERR_DISCONNECTED", "the store closed the fd channel before answering")
                    reader.push(data)
                    got = reader.next()
            except OSError as e:
                for fd in fds:
                    os.close(fd)
                raise TrellisError("ERR_DISCONNECTED", f"fd channel to {self.socket_path} failed: {e}") from None
        header, _ = got
        try:
            if header.get("t") == "err":
                raise _error_of(header)
            infos = header.get("segments")
            if header.get("t") != "ok" or not isinstance(infos, list):
                raise TrellisError("ERR_PROTOCOL", "the store's answer to fds is malformed")
            if len(infos) != len(fds):
                raise TrellisError("ERR_PROTOCOL", f"fd channel sent {len(fds)} fds for {len(infos)} segments")
            for i, info in enumerate(infos):
                sid, size = _uint_field(info, "id"), _uint_field(info, "size")
                actual = os.fstat(fds[i]).st_size
                if actual != size:
                    raise TrellisError("ERR_PROTOCOL", f"segment {sid} is {actual} bytes, the store said {size}")
                self._segments[sid] = _Segment(sid, size, fds[i])
                fds[i] = -1
        finally:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)

    # ---- requests -----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise TrellisError("ERR_CLOSED", "the client was closed")

    def _send(self, body: dict, payload: bytes = b"", no_reply: bool = False) -> int:
        self._check_open()
        self._rid = self._rid + 1 if self._rid < 0xFFFFFFFE else 1
        header = {"rid": self._rid, **body}
        if no_reply:
            header["noReply"] = True
        try:
            self._sock.sendall(frame.encode(header, payload))
        except OSError as e:
            raise TrellisError("ERR_DISCONNECTED", f"store connection failed: {e}") from None
        return self._rid

    def _call(self, body: dict, payload: bytes = b"") -> dict:
        rid = self._send(body, payload)
        while True:
            got = self._reader.next()
            if got is None:
                try:
                    data = self._sock.recv(1 << 16)
                except OSError as e:
                    raise TrellisError("ERR_DISCONNECTED", f"store connection failed: {e}") from None
                if not data:
                    raise TrellisError("ERR_DISCONNECTED", "the store closed the connection")
                self._reader.push(data)
                continue
            header, _payload = got
            if header.get("rid") == rid:
                if header["t"] == "err":
                    raise _error_of(header)
                if header["t"] != "ok":
                    raise TrellisError("ERR_PROTOCOL", f"the answer to {body['t']} is not \"ok\" but {header['t']}")
                return header
            if header.get("rid") == 0 and header["t"] == "err":
                # The store gave up on this connection.
                raise _error_of(header)


def _error_of(header: dict) -> TrellisError:
    code, message = header.get("code"), header.get("message")
    if not isinstance(code, str) or not isinstance(message, str):
        return TrellisError("ERR_PROTOCOL", "the store sent an error answer without a code and message")
    return TrellisError(code, message)


def _segments_of(tree: dict) -> set[int]:
    out: set[int] = set()
    stack = [tree]
    while stack:
        t = stack.pop()
        if not isinstance(t, dict):
            raise TrellisError("ERR_PROTOCOL", "the store's answer to get is malformed: a member is not an object")
        blob = t.get("blob")
        if blob is not None:
            seg, _off, size = _location(blob, "blob")
            if size > 0:
                out.add(seg)
        stack.extend(t.get("members") or [])
    return out


def _location(loc: object, what: str) -> tuple[int, int, int]:
    if not isinstance(loc, dict):
        raise TrellisError("ERR_PROTOCOL", f"{what} location is missing")
    return _uint_field(loc, "seg"), _uint_field(loc, "off"), _uint_field(loc, "size")


def _uint_field(h: dict, f: str) -> int:
    v = h.get(f)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise TrellisError("ERR_PROTOCOL", f"field {f} is {json.dumps(v)}, expected a non-negative integer")
    return v


def _str_field(h: dict, f: str) -> str:
    v = h.get(f)
    if not isinstance(v, str):
        raise TrellisError("ERR_PROTOCOL", f"field {f} is {json.dumps(v)}, expected a string")
    return v


def _id_field(h: dict, f: str) -> str:
    v = h.get(f)
    if not is_object_id(v):
        raise TrellisError("ERR_PROTOCOL", f"field {f} is {json.dumps(v)}, expected an object id")
    return v
