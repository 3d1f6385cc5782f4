#!/usr/bin/env python3
"""Plots bench/loadgen.py results: aggregate generated tokens/s and TTFT p95
(p50 dashed) against the number of concurrent streams N, one line per run.

    .venv-bench/bin/python bench/plot_loadgen.py tp1.json tp2.json -o docs/img/loadgen.png

Needs matplotlib (scripts/requirements-bench.txt).
"""
import argparse
import json
import sys


def plot(runs, out, title=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in runs:
        lv = r["levels"]
        n = [x["n"] for x in lv]
        # the ratio to one stream at 32 streams (the figure), else at the largest N
        at = [x for x in lv if x["n"] == 32] or lv[-1:]
        tag = f" (x{at[0]['ratio']:.1f} at N={at[0]['n']})" if at and at[0].get("ratio") == at[0].get("ratio") else ""
        line, = ax1.plot(n, [x["tok_s"] for x in lv], "o-", label=r["label"] + tag)
        c = line.get_color()
        ax2.plot(n, [x["ttft_p95_s"] * 1e3 for x in lv], "o-", color=c, label=r["label"] + " p95")
        ax2.plot(n, [x["ttft_p50_s"] * 1e3 for x in lv], "o--", color=c, alpha=0.6,
                 label=r["label"] + " p50")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ns = sorted({x["n"] for r in runs for x in r["levels"]})
        ax.set_xticks(ns)
        ax.set_xticklabels([str(x) for x in ns])
        ax.set_xlabel("concurrent streams N")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_ylabel("aggregate generated tokens/s")
    ax1.set_ylim(bottom=0)
    ax1.set_title("throughput")
    ax2.set_yscale("log")
    ax2.set_ylabel("time to first token, ms")
    ax2.set_title("TTFT (p95 solid, p50 dashed)")
    c = runs[0]["config"]
    model = c.get("model_file") or runs[0]["model"]["name"]
    fig.suptitle(title or f"tessera serve, {model}: P={c['prompt_tokens']} "
                 f"prompt tokens, G={c['gen_tokens']} generated (ignore_eos), greedy",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", nargs="+", help="loadgen.py --json outputs")
    ap.add_argument("-o", "--out", required=True, help="PNG file")
    ap.add_argument("--title")
    args = ap.parse_args()
    runs = []
    for p in args.json:
        with open(p) as f:
            runs.append(json.load(f))
    plot(runs, args.out, args.title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
