#!/usr/bin/env python3
"""Every stored type Tessera knows, dequantized by tests/unit/dequant_dump
(kernels/dtype.c) and by gguf-py's NumPy dequantizers (gguf.quants), from
the same random blocks: the results must be equal bit for bit.

The blocks are random bytes except for their f16 scales (d, and the min where
a type has one), which are random finite halves of moderate size (2^-14 to
2^4, either sign), so no element overflows and the comparison is exact.
F16 and BF16 rows are random finite bit patterns; F32 random floats.

usage: test_dequant.py DEQUANT_DUMP_TOOL
"""

import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "common"))
from check import Checks, skip  # noqa: E402

try:
    import gguf
    import gguf.quants
except ImportError:
    skip("the gguf package is not installed")

Q = gguf.GGMLQuantizationType

# type -> byte offsets of its f16 scales in a block (d first, then the min)
SCALES = {
    Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
    Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
    Q.IQ4_NL: [0],
}
PLAIN = [Q.F32, Q.F16, Q.BF16]
N_BLOCKS = 64


def random_halves(rng, n):
    """n finite f16 values, |x| in [2^-14, 2^4), random sign, as raw bytes."""
    mag = np.exp2(rng.uniform(-14, 4, n))
    sign = rng.choice([-1.0, 1.0], n)
    return (mag * sign).astype(np.float16).view(np.uint8).reshape(n, 2)


def blocks_of(rng, qtype):
    if qtype == Q.F32:
        return rng.standard_normal(256 * N_BLOCKS).astype(np.float32).view(np.uint8)
    if qtype in (Q.F16, Q.BF16):
        bits = rng.integers(0, 1 << 16, 256 * N_BLOCKS, dtype=np.uint16)
        exp_all_ones = 0x7c00 if qtype == Q.F16 else 0x7f80
        bits[(bits & exp_all_ones) == exp_all_ones] &= 0x83ff if qtype == Q.F16 else 0x807f
        return bits.view(np.uint8)
    _, bb = gguf.GGML_QUANT_SIZES[qtype]
    b = rng.integers(0, 256, size=(N_BLOCKS, bb), dtype=np.uint8)
    for at in SCALES[qtype]:
        b[:, at:at + 2] = random_halves(rng, N_BLOCKS)
    return b.reshape(-1)


def main():
    tool = sys.argv[1]
    rng = np.random.default_rng(15)
    checks = Checks()
    with tempfile.TemporaryDirectory() as d:
        for qtype in PLAIN + list(SCALES):
            raw = blocks_of(rng, qtype)
            src, dst = os.path.join(d, "in.bin"), os.path.join(d, "out.f32")
            raw.tofile(src)
            r = subprocess.run([tool, str(int(qtype)), src, dst], capture_output=True, text=True)
            if not checks.check(r.returncode == 0, f"{qtype.name}: dequant_dump runs", r.stderr):
                continue
            got = np.fromfile(dst, dtype="<f4")
            want = gguf.quants.dequantize(raw, qtype).reshape(-1).astype(np.float32)
            if not checks.check(got.shape == want.shape, f"{qtype.name}: {want.size} elements",
                                f"got {got.size}"):
                continue
            diff = got.view(np.uint32) != want.view(np.uint32)
            both_nan = np.isnan(got) & np.isnan(want)
            bad = np.flatnonzero(diff & ~both_nan)
            err = float(np.max(np.abs(got.astype(np.float64) - want)))
            why = (f"{bad.size} differ, first at {bad[0] if bad.size else 0}: "
                   f"{got[bad[0]] if bad.size else 0!r} vs {want[bad[0]] if bad.size else 0!r}")
            checks.check(bad.size == 0,
                         f"{qtype.name}: bit for bit over {want.size} elements "
                         f"(max |x| {float(np.max(np.abs(want))):.3g}, max abs diff {err:.3g})",
                         why)
        # the other way: f32 into Q8_0 and Q4_0 blocks (--weight-dtype q8_0|q4_0) must
        # give gguf-py's quantizers' bytes, ties and zero blocks included
        x = rng.standard_normal(32 * N_BLOCKS).astype(np.float32)
        x[:32] = 0  # a zero block: d = 0
        x[32:64] = np.float32(0.5) * np.arange(-16, 16, dtype=np.float32)  # exact halves
        x[64:96] *= np.float32(1e4)
        for qtype in (gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0):
            src, dst = os.path.join(d, "x.f32"), os.path.join(d, f"{qtype.name}.bin")
            x.tofile(src)
            r = subprocess.run([tool, "--quantize", str(int(qtype)), src, dst],
                               capture_output=True, text=True)
            if not checks.check(r.returncode == 0, f"{qtype.name}: dequant_dump --quantize runs",
                                r.stderr):
                continue
            got = np.fromfile(dst, dtype=np.uint8)
            want = gguf.quants.quantize(x.reshape(N_BLOCKS, 32), qtype).reshape(-1)
            bad = np.flatnonzero(got != want) if got.shape == want.shape else [0]
            checks.check(len(bad) == 0, f"{qtype.name}: quantized {x.size} values to gguf-py's "
                         f"bytes ({want.size} bytes)", f"{len(bad)} bytes differ, first at "
                         f"{bad[0] if len(bad) else 0}")
    sys.exit(checks.finish("test_dequant"))


if __name__ == "__main__":
    main()
