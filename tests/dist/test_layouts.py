#!/usr/bin/env python3
"""Layout equivalence: the same model cut into tp x pp shards gives the same answer.

For (tp, pp) in (1,1), (2,1), (3,1), (1,2), (1,3), (2,2), (3,2) on the default
model (9 heads / 3 KV heads, so tp=2 is the uneven 6+3 split), engine_probe runs
under mpirun with --weight-dtype f32 --kv-dtype f32 (the reference path, whose
results move only in the last bits when a sum is split; an f16 cache would round
those last bits into whole f16 steps) and writes what rank 0 sees. Every layout must
give:
  * logits of every prompt position within 1e-5 relative of (1,1);
  * the same 64 greedy tokens (argmax through the max-with-index all-reduce);
  * the same 16 greedy tokens for two sequences decoded together in one batch,
    the first equal to the single-sequence greedy tokens.
Per-rank peak RSS must fall as tp*pp grows (each rank holds ~1/(tp*pp) of the
weights): the largest rank of (3,2) stays under 60% of (1,1).

The default path (weights kept in their Q4_1/Q8_0 blocks, activations quantized to
8 bits per block, an f16 KV cache) runs (1,1), (1,2), (1,3), (2,1) and (2,2): a pipeline split adds no
sum, so (1,2) and (1,3) must give bitwise the logits and tokens of (1,1); a tensor split
adds the row-parallel partial sums in another order, and rounding an activation to 8
bits turns those last-bit differences into whole steps here and there (as any two
builds of llama.cpp differ), so (2,1) and (2,2) must stay within the quantization's own
noise of (1,1): 0.1 of the largest logit, a tenth of what a wrong shard would give.

Staging: (2,1), (1,2) and (2,2) run again with --stage-host (the engine's
stage_host switch: activations cross the TP all-reduce and the PP send/recv
through host scratch buffers, the path a GPU takes with --comm mpi). On the CPU
the copies are exact, so logits must be bitwise equal to the same layout
without staging, and the greedy and batched tokens identical.

usage: test_layouts.py ENGINE_PROBE MPIEXEC
"""

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "model"))
from common import check, default_model, fail  # noqa: E402

LAYOUTS = [(1, 1), (2, 1), (3, 1), (1, 2), (1, 3), (2, 2), (3, 2)]
STAGED = [(2, 1), (1, 2), (2, 2)]
BLOCKS = [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)]  # the default path (weights in blocks)
IDS = [1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198]


def mpirun(mpiexec, n, cmd):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_mpi_yield_when_idle="1")
    return subprocess.run([mpiexec, "-np", str(n), "--oversubscribe", "--bind-to", "none", *cmd],
                          capture_output=True, text=True, env=env, timeout=600)


def main():
    probe, mpiexec = sys.argv[1], sys.argv[2]
    model = default_model()
    results, staged = {}, {}
    with tempfile.TemporaryDirectory() as root:
        blocks = {}
        runs = ([(tp, pp, "") for tp, pp in LAYOUTS] + [(tp, pp, "s") for tp, pp in STAGED] +
                [(tp, pp, "q") for tp, pp in BLOCKS])
        for tp, pp, kind in runs:
            stage = kind == "s"
            name = f"tp={tp} pp={pp}" + {"": "", "s": " staged", "q": " blocks"}[kind]
            d = os.path.join(root, f"{tp}x{pp}{kind}")
            os.makedirs(d)
            t0 = time.time()
            flags = (["--stage-host"] if stage else []) + \
                (["--weight-dtype", "file"] if kind == "q" else
                 ["--weight-dtype", "f32", "--kv-dtype", "f32"])
            r = mpirun(mpiexec, tp * pp, [probe, *flags, model, d, str(tp), str(pp), *map(str, IDS)])
            if r.returncode != 0:
                fail(f"{name}: engine_probe exited {r.returncode}\n{r.stdout}\n{r.stderr}")
            logits = np.fromfile(os.path.join(d, "logits.f32"), dtype="<f4").reshape(len(IDS), -1)
            greedy = open(os.path.join(d, "greedy.txt")).read().split()
            batch = [l.split() for l in open(os.path.join(d, "batch.txt")).read().splitlines()]
            rss = [int(l.split()[1]) for l in open(os.path.join(d, "rss.txt"))]
            {"": results, "s": staged, "q": blocks}[kind][(tp, pp)] = (
                logits.astype(np.float64), greedy, batch, rss)
            print(f"{name}: {time.time() - t0:.1f} s, per-rank peak RSS MiB "
                  f"{[round(x / 1024) for x in rss]}")

    for (tp, pp), (logits, greedy, batch, _) in staged.items():
        ref_logits, ref_greedy, ref_batch, _ = results[(tp, pp)]
        same = np.array_equal(logits, ref_logits)
        print(f"tp={tp} pp={pp} staged: logits bitwise equal to unstaged: {same}")
        check(same, f"tp={tp} pp={pp}: staging through host changed the logits (max difference "
                    f"{float(np.max(np.abs(logits - ref_logits))):.3e})")
        check(greedy == ref_greedy, f"tp={tp} pp={pp}: staging changed the greedy tokens")
        check(batch == ref_batch, f"tp={tp} pp={pp}: staging changed the batched greedy tokens")
    base_logits, base_greedy, base_batch, base_rss = results[(1, 1)]
    check(base_batch[0] == base_greedy[:16],
          f"two sequences in one batch changed sequence 0's tokens: {base_batch[0]} vs {base_greedy[:16]}")
    for (tp, pp), (logits, greedy, batch, rss) in results.items():
        e = float(np.max(np.abs(logits - base_logits)) / np.max(np.abs(base_logits)))
        print(f"tp={tp} pp={pp}: logits max relative difference from (1,1) {e:.2e}")
        check(e <= 1e-5, f"tp={tp} pp={pp}: logits differ from (1,1) by {e:.2e} (> 1e-5)")
        check(greedy == base_greedy, f"tp={tp} pp={pp}: greedy tokens differ from (1,1):\n"
                                     f"{greedy}\n{base_greedy}")
        check(batch == base_batch, f"tp={tp} pp={pp}: batched greedy tokens differ from (1,1)")
    q_logits, q_greedy, q_batch, q_rss = blocks[(1, 1)]
    drift = float(np.max(np.abs(q_logits - base_logits)) / np.max(np.abs(base_logits)))
    print(f"blocks (1,1): logits within {drift:.2e} of f32's, greedy tokens "
          f"{sum(a == b for a, b in zip(q_greedy, base_greedy))}/64 the same, peak RSS "
          f"{q_rss[0] / 1024:.0f} MiB vs {base_rss[0] / 1024:.0f} MiB")
    check(q_rss[0] < 0.7 * base_rss[0], "keeping the blocks did not cut the RSS")
    check(q_batch[0] == q_greedy[:16], "blocks: two sequences in one batch changed sequence 0's")
    for (tp, pp), (logits, greedy, batch, rss) in blocks.items():
        e = float(np.max(np.abs(logits - q_logits)) / np.max(np.abs(q_logits)))
        same = sum(a == b for a, b in zip(greedy, q_greedy))
        print(f"blocks tp={tp} pp={pp}: logits max relative difference from (1,1) {e:.2e}, "
              f"greedy tokens {same}/64 the same")
        if tp == 1:
            check(e == 0 and greedy == q_greedy and batch == q_batch,
                  f"blocks tp=1 pp={pp}: not bitwise the logits and tokens of (1,1) ({e:.2e})")
        else:
            check(e <= 0.1, f"blocks tp={tp} pp={pp}: logits differ from (1,1) by {e:.2e}")
    big = max(results[(3, 2)][3])
    print(f"largest rank at (3,2): {big / 1024:.0f} MiB vs {base_rss[0] / 1024:.0f} MiB at (1,1)")
    check(big < 0.6 * base_rss[0],
          f"per-rank RSS did not fall with tp*pp: {big} KiB at (3,2) vs {base_rss[0]} KiB at (1,1)")
    print("PASS")


if __name__ == "__main__":
    main()
