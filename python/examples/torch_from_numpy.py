"""PyTorch over a Trellis tensor without a copy: torch.from_numpy shares the numpy view's memory.

    PYTHONPATH=python python3 python/examples/torch_from_numpy.py /tmp/trellis.sock NAME

Prints one JSON line: the tensor's shape and dtype, its sum, and whether torch's data pointer is
the shared-memory view's own (no copy was made).
"""

import json
import sys
import warnings

import torch

import trellis

socket, name = sys.argv[1], sys.argv[2]
with trellis.connect(socket) as c:
    with c.pinned(name) as a:
        # The view is read-only (the store's memory is shared); torch warns that it cannot enforce that.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(a)
        print(json.dumps({
            "shape": list(t.shape),
            "dtype": str(t.dtype),
            "sum": float(t.double().sum()),
            "sharesMemory": t.data_ptr() == a.__array_interface__["data"][0],
        }))
        del t
