"""Driver of test/python-client.test.ts: runs one check against a store and prints one JSON line per result.

    check.py read SOCKET NAME...     dtype, shape, writability, owner of the memory and sha256 of each object
    check.py memory SOCKET NAME      private memory before and after reading every byte of NAME
    check.py put SOCKET PREFIX       puts one array per dtype (and a large one) under PREFIX/, prints their hashes
    check.py hold SOCKET NAME        gets NAME, says so, and sleeps (to be killed)
    check.py errors SOCKET NAME      the error of each misuse, NAME being a tensor
"""

import hashlib
import json
import mmap
import sys
import time

import numpy as np

import trellis


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def root_base(a):
    """What finally owns an array's memory: numpy keeps a memoryview of the buffer frombuffer was given."""
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return a.obj if isinstance(a, memoryview) else a


def private_kib():
    fields = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                fields[parts[0][:-1]] = int(parts[1])
    return fields["Private_Clean"] + fields["Private_Dirty"], fields["Rss"], fields["Anonymous"]


def main():
    cmd, socket = sys.argv[1], sys.argv[2]
    c = trellis.connect(socket)
    if cmd == "read":
        for name in sys.argv[3:]:
            a = c.get(name)
            out({
                "name": name,
                "dtype": str(a.dtype),
                "shape": list(a.shape),
                "writeable": bool(a.flags.writeable),
                "owner": type(root_base(a)).__name__,
                "sha256": hashlib.sha256(a.data if a.size else b"").hexdigest(),
            })
            c.release(a)
        out({"held": c.held_count})
    elif cmd == "memory":
        before, rss_before, anon_before = private_kib()
        a = c.get(sys.argv[3])
        digest = hashlib.sha256(a.data).hexdigest()
        after, rss_after, anon_after = private_kib()
        out({"nbytes": a.nbytes, "sha256": digest, "privateKiB": after - before, "rssKiB": rss_after - rss_before,
             "anonKiB": anon_after - anon_before,
             "isMmap": isinstance(root_base(a), mmap.mmap)})
    elif cmd == "put":
        prefix = sys.argv[3]
        for name, dt in trellis.DTYPES.items():
            n = 3 * 5
            if name == "bool":
                a = (np.arange(n) % 3 == 0).reshape(3, 5)
            else:
                a = (np.arange(n, dtype=np.float64) * 7 - 20).astype(dt).reshape(3, 5)
                if name.startswith("uint"):
                    a = np.arange(n, dtype=dt).reshape(3, 5) * 3
            i = c.put(a, name=f"{prefix}/{name}")
            out({"name": f"{prefix}/{name}", "id": i, "dtype": name, "shape": [3, 5],
                 "sha256": hashlib.sha256(np.ascontiguousarray(a).data).hexdigest()})
        big = np.arange(1 << 20, dtype=np.int32).reshape(1024, 1024)[:, ::-1]  # not contiguous: put must copy in place
        i = c.put(big, name=f"{prefix}/big")
        out({"name": f"{prefix}/big", "id": i, "dtype": "int32", "shape": [1024, 1024],
             "sha256": hashlib.sha256(np.ascontiguousarray(big).data).hexdigest()})
        w = c.create_tensor("float16", [4])
        w.array[:] = [1.0, -2.0, 0.5, 65504.0]
        i = w.seal(name=f"{prefix}/written")
        out({"name": f"{prefix}/written", "id": i, "bits": [int(b) for b in w.array.view(np.uint16)]})
        out({"held": c.held_count})
    elif cmd == "hold":
        a = c.get(sys.argv[3])
        out({"holding": sys.argv[3], "shape": list(a.shape)})
        time.sleep(3600)
    elif cmd == "errors":
        def code(f):
            try:
                f()
                return "no error"
            except trellis.TrellisError as e:
                return e.code
            except ValueError as e:
                return f"ValueError: {e}"

        a = c.get(sys.argv[3])
        out({
            "missing": code(lambda: c.get("no/such")),
            "badId": code(lambda: c.get("o00000000000fffff")),
            "complex": code(lambda: c.put(np.zeros(3, dtype=np.complex64))),
            "notHeld": code(lambda: c.release("o00000000000fffff")),
            "foreignArray": code(lambda: c.release(np.zeros(3))),
            "write": code(lambda: a.__setitem__(0, 1)),
            "taken": code(lambda: c.put(np.zeros(3), name=sys.argv[3])),
            "takenBig": code(lambda: c.put(np.zeros(1 << 20), name=sys.argv[3])),
        })
        c.release(a)
        c.close()
        c.close()
        out({"afterClose": code(lambda: c.get(sys.argv[3]))})
        return
    else:
        raise SystemExit(f"unknown command {cmd}")
    c.close()


if __name__ == "__main__":
    try:
        main()
    except trellis.TrellisError as e:
        out({"error": e.code, "message": e.message})
        sys.exit(3)
