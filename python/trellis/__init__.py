"""Trellis for Python: read and write a Trellis store's objects as numpy arrays over shared memory.

    import trellis
    with trellis.connect("/tmp/trellis.sock") as c:
        with c.pinned("fmnist/test/images") as a:   # read-only numpy array, no copy
            print(a.shape, a.dtype)
        i = c.put(numpy_array, name="x")          # written in place, sealed

Pure Python plus numpy; it speaks the store's documented IPC protocol (docs/PROTOCOL.md).
"""

from __future__ import annotations

import os

from .client import Client, StoredObject, TensorWriter, is_object_id
from .dtypes import DTYPES
from .errors import TrellisError

__all__ = ["Client", "DTYPES", "StoredObject", "TensorWriter", "TrellisError", "connect", "is_object_id"]


def connect(socket: str | None = None, name: str | None = None, timeout: float = 10.0) -> Client:
    """Connects to the store at ``socket`` (default $TRELLIS_SOCKET, then /tmp/trellis.sock)."""
    return Client(socket or os.environ.get("TRELLIS_SOCKET") or "/tmp/trellis.sock", name=name, timeout=timeout)
