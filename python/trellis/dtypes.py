"""Trellis dtypes and their numpy equivalents: the tensor's bytes are little-endian, row-major."""

from __future__ import annotations

import numpy as np

from .errors import TrellisError

DTYPES: dict[str, np.dtype] = {
    "bool": np.dtype(np.bool_),
    "int8": np.dtype("<i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "uint8": np.dtype("<u1"),
    "uint16": np.dtype("<u2"),
    "uint32": np.dtype("<u4"),
    "uint64": np.dtype("<u8"),
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
}

_BY_KIND = {(d.kind, d.itemsize): name for name, d in DTYPES.items()}


def numpy_dtype(name: object) -> np.dtype:
    if not isinstance(name, str) or name not in DTYPES:
        raise TrellisError("ERR_PROTOCOL", f"unknown dtype {name!r}")
    return DTYPES[name]


def trellis_dtype(dt: np.dtype) -> str:
    """The Trellis name of a numpy dtype (either byte order); ERR_UNSUPPORTED for complex, strings, objects..."""
    name = _BY_KIND.get((dt.kind, dt.itemsize))
    if name is None or dt.fields is not None or dt.subdtype is not None:
        raise TrellisError("ERR_UNSUPPORTED", f"numpy dtype {dt} has no Trellis dtype (one of {', '.join(DTYPES)})")
    return name
