"""Fold alternated ``bench_e2e`` runs of two trees into one A/B summary (JSON + plot).

    .venv/bin/python -m bench.e2e.ab_summary --out bench/e2e/results-NAME-ab.json \\
        A=/tmp/ab/a1/results-a.json,/tmp/ab/a2/results-a.json B=/tmp/ab/b1/results-b.json,...

Per variant and step (each curve rate, and 80 % of the maximum): p50 / p99 of every run, their
medians, the two Kafka hops' p99, alerts missing and doubled, and how many runs met the SLO's p99.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def _steps(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [*result["curve"], result["at_80pct_of_max"]]


def summarise(variants: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, runs in variants.items():
        by_step: dict[str, list[dict[str, Any]]] = {}
        for run in runs:
            for step in _steps(run):
                by_step.setdefault(step["label"], []).append(step)
        slo = runs[0]["slo_p99_ms"]
        out[name] = {
            label: {
                "runs": len(steps),
                "p50_ms": [s["latency_ms"]["p50"] for s in steps],
                "p99_ms": [s["latency_ms"]["p99"] for s in steps],
                "median_p50_ms": statistics.median(s["latency_ms"]["p50"] for s in steps),
                "median_p99_ms": statistics.median(s["latency_ms"]["p99"] for s in steps),
                "ingested_to_evaluated_p99_ms": [s["hops_ms"]["ingested_to_evaluated"]["p99"] for s in steps],
                "evaluated_to_sent_p99_ms": [s["hops_ms"]["evaluated_to_sent"]["p99"] for s in steps],
                "runs_p99_within_slo": sum(s["latency_ms"]["p99"] <= slo for s in steps),
                "runs_p99_within_100ms": sum(s["latency_ms"]["p99"] <= 100 for s in steps),
                "alerts_missing": sum(s["alerts_missing"] for s in steps),
                "duplicates": sum(s["duplicates"] for s in steps),
                "load_average_1m": [s["load_average"][0] for s in steps],
            }
            for label, steps in by_step.items()
        }
    return out


def plot(summary: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = list(summary)
    labels = list(summary[names[0]])
    for i, name in enumerate(names):
        for j, label in enumerate(labels):
            ys = summary[name][label]["p99_ms"]
            xs = [j + (i - (len(names) - 1) / 2) * 0.25] * len(ys)
            ax.scatter(xs, ys, color=f"C{i}", label=name if j == 0 else None)
            ax.hlines(summary[name][label]["median_p99_ms"], xs[0] - 0.1, xs[0] + 0.1, color=f"C{i}")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("event -> page p99 (ms), each run; bar: median")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("variants", nargs="+", help="NAME=results.json,results.json,...")
    args = ap.parse_args()
    variants = {}
    for arg in args.variants:
        name, files = arg.split("=", 1)
        variants[name] = [json.loads(Path(f).read_text()) for f in files.split(",")]
    summary = summarise(variants)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, args.out.with_suffix(".png"))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
