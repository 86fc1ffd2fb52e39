#!/usr/bin/env python3
"""Charts of `epserve bench --json-out` results against concurrency.

  tools/plot_bench.py --out docs/img/bench_tiny.png RESULT.json [RESULT.json ...]
  tools/plot_bench.py --out chart.png --label grpc a*.json --label openai b*.json

Each JSON file is one run (one --max-concurrency). Runs are grouped into
series: by --label (each --label applies to the files after it), else by the
file's "backend" field. The PNG has three panels against concurrency: output
throughput (tok/s), TTFT (median and p99, ms) and ITL (median and p99, ms).
Needs matplotlib (Debian: python3-matplotlib). --table prints the same
numbers as a Markdown table on stdout instead of (or besides) the chart.
"""
import argparse
import json
import sys


def load(path):
    with open(path) as f:
        run = json.load(f)
    for key in ("max_concurrency", "output_throughput", "median_ttft_ms", "p99_ttft_ms",
                "median_itl_ms", "p99_itl_ms"):
        if key not in run:
            sys.exit(f"plot_bench: {path}: no '{key}' (not an `epserve bench --json-out` file?)")
    if run["max_concurrency"] is None:
        run["max_concurrency"] = run.get("num_prompts", 0)  # no cap: all at once
    return run


def series_of(argv):
    """[(label, [run, ...])] from files interleaved with --label NAME."""
    series, label = {}, None
    i = 0
    while i < len(argv):
        if argv[i] == "--label":
            if i + 1 >= len(argv):
                sys.exit("plot_bench: --label needs a name")
            label = argv[i + 1]
            i += 2
            continue
        run = load(argv[i])
        name = label or run.get("backend", "epserve")
        series.setdefault(name, []).append(run)
        i += 1
    if not series:
        sys.exit("plot_bench: no result files given")
    return [(name, sorted(runs, key=lambda r: r["max_concurrency"]))
            for name, runs in series.items()]


def table(series):
    lines = ["| series | concurrency | output tok/s | TTFT p50 / p99 ms | ITL p50 / p99 ms | failed |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, runs in series:
        for r in runs:
            lines.append(
                f"| {name} | {r['max_concurrency']} | {r['output_throughput']:.1f} | "
                f"{r['median_ttft_ms']:.1f} / {r['p99_ttft_ms']:.1f} | "
                f"{r['median_itl_ms']:.2f} / {r['p99_itl_ms']:.2f} | {r.get('failed', 0)} |")
    return "\n".join(lines)


def plot(series, out, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for name, runs in series:
        c = [r["max_concurrency"] for r in runs]
        axes[0].plot(c, [r["output_throughput"] for r in runs], marker="o", label=name)
        for ax, metric in ((axes[1], "ttft"), (axes[2], "itl")):
            line, = ax.plot(c, [r[f"median_{metric}_ms"] for r in runs], marker="o",
                            label=f"{name} p50")
            ax.plot(c, [r[f"p99_{metric}_ms"] for r in runs], marker="^", linestyle="--",
                    color=line.get_color(), label=f"{name} p99")
    for ax, ylabel in zip(axes, ("output tokens / s", "time to first token (ms)",
                                 "inter-token latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency (requests in flight)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="PNG to write")
    parser.add_argument("--title", default="")
    parser.add_argument("--table", action="store_true", help="print a Markdown table")
    opts, files = parser.parse_known_args()
    if not opts.out and not opts.table:
        sys.exit("plot_bench: give --out PNG and/or --table")
    series = series_of(files)
    if opts.table:
        print(table(series))
    if opts.out:
        plot(series, opts.out, opts.title)
        print(f"plot_bench: wrote {opts.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
