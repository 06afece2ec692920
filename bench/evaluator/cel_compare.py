"""Per-evaluation cost of a rule condition: alertpipe's compiled CEL subset vs cel-python.

The figure behind the choice of a hand-written CEL compiler (workers/rules/cel.py). cel-python is
optional (a dev extra); without it only our figure is printed. Prints JSON, writes
bench/evaluator/cel_compare.json.

    .venv/bin/python -m bench.evaluator.cel_compare
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from alertpipe.workers.rules.cel import compile_expression

HERE = Path(__file__).resolve().parent
EXPRESSIONS = [
    'value > 80.0 && type == "cpu"',
    'region.startsWith("eu") && value > 80.0 && !has(maintenance)',
    "status in [500, 502, 503] || latencyMs > 250",
]
EVENT: dict[str, Any] = {
    "tenant": "acme",
    "deviceId": "d1",
    "seq": 1,
    "type": "cpu",
    "value": 91.5,
    "region": "eu-west-1",
    "status": 200,
    "latencyMs": 120,
}


def per_call_us(fn: Any, arg: Any, n: int) -> float:
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            fn(arg)
        best = min(best, (time.perf_counter() - t) / n * 1e6)
    return best


def main() -> int:
    out: dict[str, Any] = {}
    for expr in EXPRESSIONS:
        prog = compile_expression(expr)
        row: dict[str, Any] = {"alertpipe_us": round(per_call_us(prog.fn, EVENT, 200_000), 3)}
        try:
            import celpy
            from celpy.adapter import json_to_cel
        except ImportError:
            row["cel_python_us"] = None
        else:
            env = celpy.Environment()
            program = env.program(env.compile(expr))

            def run(event: dict[str, Any], program: Any = program) -> Any:
                return program.evaluate(json_to_cel(event))

            row["cel_python_us"] = round(per_call_us(run, EVENT, 500), 1)
            row["ratio"] = round(row["cel_python_us"] / row["alertpipe_us"])
        out[expr] = row
    print(json.dumps(out, indent=2))
    (HERE / "cel_compare.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
