#!/usr/bin/env python3
"""The timing tables of tapegrad against manual (and pytorch, jax when run) from the
message logs gradbench.sh run writes ($GB_RESULTS/EVAL/TOOL.jsonl.gz).

Per input, each tool's fastest `evaluate` run (the runs are the tool's own timings of the
computation alone) and its first run; per eval, the ratios tapegrad / manual (and the
others / manual) as the geometric mean over inputs and the worst input, and the outcome of
GradBench's validation (the analysis messages).

With several result folders in GB_RESULTS (separated by `:`, one per session of the same
tool builds), each time is the fastest over all the sessions' runs and each first run the
fastest first run (every session starts the tool afresh); validation counts add up.

Usage: table.py [EVAL...]   (default: every eval with results)
"""

import gzip
import json
import math
import os
import sys
from pathlib import Path

# (objective, derivative) function names per eval; particle and saddle have four
# derivative variants and no objective
FUNCTIONS = {
    "hello": ("square", "double"),
    "lse": ("primal", "gradient"),
    "llsq": ("primal", "gradient"),
    "ode": ("primal", "gradient"),
    "det": ("primal", "gradient"),
    "kmeans": ("cost", "dir"),
    "gmm": ("objective", "jacobian"),
    "lstm": ("objective", "jacobian"),
    "ba": ("objective", "jacobian"),
    "ht": ("objective", "jacobian"),
}
TOOLS = ["tapegrad", "manual", "pytorch", "jax"]


def load(path):
    """{(function, description): {min, first, runs, valid}} and the logged load."""
    messages, responses = {}, {}
    with gzip.open(path, "rt") as f:
        for line in f:
            entry = json.loads(line)
            if "message" in entry:
                messages[entry["message"]["id"]] = entry["message"]
            elif "response" in entry:
                responses[entry["response"]["id"]] = entry["response"]
    runs = {}
    for id, m in messages.items():
        if m["kind"] != "evaluate":
            continue
        r = responses.get(id, {})
        key = (m["function"], str(m.get("description", m.get("input"))))
        ns = [t["nanoseconds"] for t in r.get("timings", []) if t["name"] == "evaluate"]
        runs[key] = {
            "min": min(ns) if ns and r.get("success") else None,
            "first": ns[0] if ns and r.get("success") else None,
            "runs": len(ns),
            "valid": None,
            "order": id,
        }
    for m in messages.values():
        if m["kind"] == "analysis":
            key = next((k for k, v in runs.items() if v["order"] == m["of"]), None)
            if key:
                runs[key]["valid"] = m["valid"]
    load = ""
    log = path.with_name(path.name.replace(".jsonl.gz", ".log"))
    if log.exists():
        lines = [l for l in log.read_text().splitlines() if l.startswith("# load")]
        load = ", ".join(l[2:] for l in lines)
    return runs, load


def ms(ns):
    if ns is None:
        return "—"
    if ns >= 1e9:
        return f"{ns / 1e9:.2f} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e3:.0f} µs"


def geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def merge(sessions):
    """The sessions' loads of one tool as one: fastest runs, fastest first runs."""
    runs, loads = {}, []
    for session, load in sessions:
        loads.append(load or "load not logged")
        for key, r in session.items():
            if key not in runs:
                runs[key] = dict(r)
                continue
            m = runs[key]
            for field in ("min", "first"):
                values = [v for v in (m[field], r[field]) if v is not None]
                m[field] = min(values) if values else None
            m["runs"] += r["runs"]
            m["valid"] = (m["valid"] or 0) + (r["valid"] or 0) if r["valid"] is not None else m["valid"]
    return runs, "; ".join(loads)


def table(eval, results):
    data = {}
    for t in TOOLS:
        sessions = [load(r / eval / f"{t}.jsonl.gz") for r in results if (r / eval / f"{t}.jsonl.gz").exists()]
        if sessions:
            data[t] = merge(sessions)
    if "tapegrad" not in data:
        return
    ours, load_ours = data["tapegrad"]
    # tools with at least one successful run (manual has no particle or saddle)
    others = [t for t in TOOLS[1:] if t in data and any(v["min"] for v in data[t][0].values())]
    print(f"\n### {eval}\n")
    for t in data:
        print(f"- {t}: {data[t][1] or 'load not logged'}")
    valid = [int(v["valid"] or 0) for v in ours.values()]
    sessions = sum((r / eval / "tapegrad.jsonl.gz").exists() for r in results)
    print(f"- sessions: {sessions}; tapegrad validated: {sum(valid)} of {len(valid) * sessions} evaluations")
    objective, derivative = FUNCTIONS.get(eval, (None, None))
    keys = sorted(ours, key=lambda k: ours[k]["order"])
    descriptions = list(dict.fromkeys(d for _, d in keys))
    functions = [f for f in dict.fromkeys(f for f, _ in keys)]
    head = "| input | function | tapegrad (first run) |" + "".join(f" {t} | ratio |" for t in others)
    print("\n" + head + "\n|" + "---|" * (head.count("|") - 1))
    ratios = {(t, f): [] for t in others for f in functions}
    for d in descriptions:
        for f in functions:
            mine = ours.get((f, d))
            if not mine:
                continue
            row = f"| {d} | {f} | {ms(mine['min'])} ({ms(mine['first'])}) |"
            for t in others:
                theirs = data[t][0].get((f, d))
                ratio = mine["min"] / theirs["min"] if theirs and theirs["min"] and mine["min"] else None
                ratios[(t, f)].append((ratio, d))
                row += f" {ms(theirs and theirs['min'])} | {f'{ratio:.2f}' if ratio else '—'} |"
            print(row)
    print()
    for (t, f), rs in ratios.items():
        rs = [(r, d) for r, d in rs if r]
        if rs:
            worst = max(rs)
            print(f"- tapegrad / {t}, {f}: geometric mean {geomean([r for r, _ in rs]):.2f}, "
                  f"worst {worst[0]:.2f} ({worst[1]}), {len(rs)} inputs")
    if objective and derivative:
        own = [
            (ours[(derivative, d)]["min"] / ours[(objective, d)]["min"], d)
            for d in descriptions
            if ours.get((derivative, d), {}).get("min") and ours.get((objective, d), {}).get("min")
        ]
        if own:
            worst = max(own)
            print(f"- tapegrad {derivative} / its own {objective}: geometric mean "
                  f"{geomean([r for r, _ in own]):.2f}, worst {worst[0]:.2f} ({worst[1]})")
    firsts = [v["first"] / v["min"] for v in ours.values() if v["min"]]
    if firsts:
        print(f"- tapegrad first run / fastest run: geometric mean {geomean(firsts):.2f}, largest {max(firsts):.2f}")


def main():
    results = [Path(r) for r in os.environ.get("GB_RESULTS", "gradbench-results").split(":") if r]
    evals = sys.argv[1:] or sorted(
        {p.name for r in results for p in r.iterdir() if (p / "tapegrad.jsonl.gz").exists()}
    )
    for e in evals:
        table(e, results)


if __name__ == "__main__":
    main()
