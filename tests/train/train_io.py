"""Reads and writes the case files of tests/train/train_ops_driver.c (test-only).

A file holds a list of cases; a case is (op, ints, floats, arrays) with ints
and floats dicts of named scalars and arrays a dict name -> (kind, ndarray).
Kinds: 'a' activation (f32), 'f' f32, 'i' int32, 'w' weight (2-D f32),
'd' f64 kept on the host. The byte layout is documented at the top of
train_ops_driver.c; this module is its only Python writer and reader.
"""

import struct

import numpy as np

MAGIC = b"TSRC"
VERSION = 1
DTYPES = {"a": "<f4", "f": "<f4", "w": "<f4", "i": "<i4", "d": "<f8"}


class Case:
    def __init__(self, op, ints=None, floats=None, arrays=None):
        self.op = op
        self.ints = dict(ints or {})
        self.floats = dict(floats or {})
        self.arrays = dict(arrays or {})  # name -> (kind, ndarray)

    def add(self, name, kind, a):
        """Adds array `name`, converted to the file type of `kind`; returns it."""
        a = np.ascontiguousarray(np.asarray(a, dtype=DTYPES[kind]))
        if kind == "w":
            assert a.ndim == 2, name
        self.arrays[name] = (kind, a)
        return a

    def __getitem__(self, name):
        return self.arrays[name][1]


def _str(s):
    b = s.encode()
    return struct.pack("<I", len(b)) + b


def write_cases(path, cases):
    parts = [MAGIC, struct.pack("<II", VERSION, len(cases))]
    for c in cases:
        parts.append(_str(c.op))
        parts.append(struct.pack("<I", len(c.ints)))
        for k, v in c.ints.items():
            parts += [_str(k), struct.pack("<q", int(v))]
        parts.append(struct.pack("<I", len(c.floats)))
        for k, v in c.floats.items():
            parts += [_str(k), struct.pack("<d", float(v))]
        parts.append(struct.pack("<I", len(c.arrays)))
        for k, (kind, a) in c.arrays.items():
            parts += [_str(k), kind.encode(), struct.pack("<I", a.ndim)]
            parts.append(struct.pack(f"<{a.ndim}Q", *a.shape))
            parts.append(np.ascontiguousarray(a, dtype=DTYPES[kind]).tobytes())
    with open(path, "wb") as f:
        f.write(b"".join(parts))


def read_cases(path):
    with open(path, "rb") as f:
        buf = f.read()
    off = 0

    def take(n):
        nonlocal off
        if off + n > len(buf):
            raise ValueError(f"{path}: truncated at byte {off}")
        b = buf[off:off + n]
        off += n
        return b

    def u32():
        return struct.unpack("<I", take(4))[0]

    def string():
        return take(u32()).decode()

    if take(4) != MAGIC or u32() != VERSION:
        raise ValueError(f"{path}: not a version-{VERSION} TSRC file")
    cases = []
    for _ in range(u32()):
        c = Case(string())
        for _ in range(u32()):
            k = string()
            c.ints[k] = struct.unpack("<q", take(8))[0]
        for _ in range(u32()):
            k = string()
            c.floats[k] = struct.unpack("<d", take(8))[0]
        for _ in range(u32()):
            k = string()
            kind = take(1).decode()
            ndim = u32()
            shape = struct.unpack(f"<{ndim}Q", take(8 * ndim))
            dt = np.dtype(DTYPES[kind])
            count = int(np.prod(shape, dtype=np.int64))
            a = np.frombuffer(take(count * dt.itemsize), dtype=dt).reshape(shape).copy()
            c.arrays[k] = (kind, a)
        cases.append(c)
    if off != len(buf):
        raise ValueError(f"{path}: {len(buf) - off} bytes after the last case")
    return cases
