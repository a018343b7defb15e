#!/usr/bin/env python3
"""Record the protocol sessions that tests/replay.rs replays through tapegrad-gradbench.

Each session is one GradBench eval run on small inputs, exactly as GradBench runs it (the
eval's own run.py, through the GradBench CLI), against the reference: the hand-written C++
tool `manual` for every eval that has it, and for particle and saddle (which `manual` does
not implement) a stand-in tool that answers with the eval's own expected output. The CLI's
message log is reduced to what a replay needs and gzipped into
tests/data/sessions/NAME.jsonl.gz, one line per message:

    {"message": <the eval's message>}                      start, define, analysis
    {"message": <evaluate message>, "output": <manual's output>}

An evaluate input identical to an earlier one (GradBench sends each input twice: objective,
then derivative) is stored as {"same_as": <id of the earlier message>}.

Run it with GradBench's Python environment, from anywhere:

    crates/gradbench/gradbench.sh record        # sets GB_SRC, GB_VENV and calls this

or by hand:  GB_SRC=<gradbench source> <venv>/bin/python record.py [NAME...]
"""

import gzip
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

# name: (eval, run.py arguments). Small sizes; every input's min_runs 1 and min_seconds 0.
# ode: manual's gradient is that of the exact solution, not of the RK4 steps the primal
# takes; they agree to the eval's tolerance only for enough steps (or for n so large that
# both underflow to 0, as at the eval's default sizes), so few points and many steps.
SESSIONS = {
    "hello": ("hello", []),
    "lse": ("lse", ["-n", "4", "1000"]),
    "llsq": ("llsq", ["-n", "16", "100", "-m", "4", "16"]),
    "ode": ("ode", ["-n", "4", "6", "-s", "30", "100"]),
    "det": ("det", ["-l", "2", "3", "5", "7"]),
    "kmeans": ("kmeans", ["-k", "2", "5", "-n", "20", "60", "-d", "2", "3"]),
    "gmm": ("gmm", ["-d", "2", "3", "-k", "2", "3", "-n", "10", "-m", "2", "--gamma", "0.7"]),
    "lstm": ("lstm", ["-l", "1", "2", "-c", "5", "12"]),
    "ba": ("ba", ["--min", "1", "--max", "2"]),
    "ht-complicated": ("ht", ["--model", "small", "--min", "1", "--max", "1"]),
    "ht-simple": ("ht", ["--model", "small", "--variant", "simple", "--min", "1", "--max", "1"]),
    "particle": ("particle", []),
    "saddle": ("saddle", []),
}

# evals without a manual implementation: the stand-in answers with the eval's expectation
EXPECTED_ONLY = {"particle", "saddle"}

HERE = Path(__file__).resolve().parent


def oracle():
    """A GradBench tool that answers each evaluate with the eval's own expected output."""
    sys.path.insert(0, str(Path.cwd() / "python" / "gradbench"))
    for line in sys.stdin:
        message = json.loads(line)
        response = {"id": message["id"]}
        kind = message["kind"]
        if kind == "start":
            response["tool"] = "expected"
        elif kind == "define":
            response["success"] = message["module"] in EXPECTED_ONLY
        elif kind == "evaluate":
            module = __import__(f"gradbench.evals.{message['module']}.run", fromlist=["expect"])
            response |= module.expect(message["function"], message["input"])
        print(json.dumps(response), flush=True)


def record(name, src, python):
    evaluation, args = SESSIONS[name]
    eval_cmd = [python, f"python/gradbench/gradbench/evals/{evaluation}/run.py", *args]
    eval_cmd += ["--min-runs", "1", "--min-seconds", "0"]
    if evaluation in EXPECTED_ONLY:
        tool_cmd = [python, str(Path(__file__).resolve()), "--oracle"]
    else:
        tool_cmd = [python, "python/gradbench/gradbench/cpp.py", "manual"]
    cli = src / "target" / "release-with-debug" / "gradbench"
    env = os.environ | {"PYTHONPATH": str(src / "python" / "gradbench"), "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "log.jsonl"
        run = [str(cli), "run", "-o", str(log), "--eval", shlex.join(eval_cmd), "--tool", shlex.join(tool_cmd)]
        subprocess.run(run, cwd=src, env=env, check=True, stdout=subprocess.DEVNULL)
        entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    responses = {e["response"]["id"]: e["response"] for e in entries if "response" in e}
    seen = {}  # input as JSON text -> id of the first message with it
    lines = []
    for entry in (e["message"] for e in entries if "message" in e):
        line = {"message": entry}
        if entry["kind"] == "evaluate":
            response = responses[entry["id"]]
            if not response.get("success"):
                sys.exit(f"{name}: the reference failed on message {entry['id']}: {response}")
            line["output"] = response["output"]
            text = json.dumps(entry["input"], sort_keys=True)
            if text in seen:
                line["message"] = entry | {"input": {"same_as": seen[text]}}
            else:
                seen[text] = entry["id"]
        lines.append(json.dumps(line, separators=(",", ":")))
    out = HERE / "sessions" / f"{name}.jsonl.gz"
    out.parent.mkdir(exist_ok=True)
    # mtime 0: the same session gives the same bytes
    with gzip.GzipFile(out, "wb", compresslevel=9, mtime=0) as f:
        f.write(("\n".join(lines) + "\n").encode())
    print(f"{out.relative_to(HERE)}: {len(lines)} messages, {out.stat().st_size} bytes")


def main():
    if sys.argv[1:] == ["--oracle"]:
        return oracle()
    src = Path(os.environ.get("GB_SRC", "")).resolve()
    if not (src / "python" / "gradbench" / "gradbench" / "eval.py").exists():
        sys.exit("set GB_SRC to a GradBench source tree that is set up (see crates/gradbench/gradbench.sh)")
    names = sys.argv[1:] or list(SESSIONS)
    for name in names:
        record(name, src, sys.executable)


if __name__ == "__main__":
    main()
