#!/usr/bin/env bash
# tapegrad on GradBench (github.com/gradbench/gradbench), without Docker.
#
#   crates/gradbench/gradbench.sh setup                 clone and build GradBench, build the tool
#   crates/gradbench/gradbench.sh run EVAL TOOL [ARGS]  one eval against one tool
#   crates/gradbench/gradbench.sh pair EVAL [ARGS]      tapegrad, then manual, on the same inputs
#   crates/gradbench/gradbench.sh table [EVAL...]       the timing table from the results
#   crates/gradbench/gradbench.sh record [NAME...]      re-record tests/data/sessions
#
# TOOL: tapegrad | manual | pytorch | jax, or any name with GB_TOOL_CMD set to the command
# that starts that tool (run from the GradBench tree). ARGS go to the eval's run.py (for example
# `--min-runs 3`, `-n 1000 10000`, `--max 11`); without them, GradBench's defaults.
#
# Environment (all optional):
#   GB_HOME     where GradBench goes (default ~/.cache/tapegrad-gradbench)
#   GB_SRC      the GradBench source tree (default $GB_HOME/src; cloned by setup if absent)
#   GB_REPO     the repository to clone (default https://github.com/gradbench/gradbench)
#   GB_REV      a commit or tag to check out after cloning
#   GB_VENV     the Python environment made from upstream's uv.lock (default $GB_HOME/venv)
#   GB_ADBENCH  a clone of github.com/microsoft/ADBench, only to rebuild the lstm eval's text
#               when the GradBench tree lacks it
#   GB_RESULTS  where run writes (default $GB_HOME/results)
#   GB_FEATURES the tool's cargo features (default openblas; "" for the pure-Rust build)
#   GB_TOOL_TARGET  the tool's cargo target directory (default target/gradbench)
#   GB_THREADS  threads for every tool (default 1, GradBench's convention)
#   GB_TIMEOUT  seconds a response may take (default 3600)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
GB_HOME=${GB_HOME:-$HOME/.cache/tapegrad-gradbench}
GB_SRC=${GB_SRC:-$GB_HOME/src}
GB_VENV=${GB_VENV:-$GB_HOME/venv}
GB_RESULTS=${GB_RESULTS:-$GB_HOME/results}
GB_FEATURES=${GB_FEATURES-openblas}
GB_THREADS=${GB_THREADS:-1}
# the tool is built like manual (-O3 -march=native): release, for this machine's CPU, in a
# target directory of its own so that other builds keep their flags
TOOL_TARGET=${GB_TOOL_TARGET:-$REPO/target/gradbench}
TOOL_BIN=$TOOL_TARGET/release/tapegrad-gradbench
PY=$GB_VENV/bin/python

say() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'gradbench.sh: %s\n' "$*" >&2; exit 1; }

cli() {
  local c
  for c in "$GB_SRC/target/release/gradbench" "$GB_SRC/target/release-with-debug/gradbench"; do
    [ -x "$c" ] && { echo "$c"; return; }
  done
  die "no GradBench CLI under $GB_SRC/target: run setup"
}

setup() {
  # 1. the source
  if [ ! -f "$GB_SRC/Cargo.toml" ]; then
    say "cloning ${GB_REPO:-https://github.com/gradbench/gradbench} into $GB_SRC"
    git clone "${GB_REPO:-https://github.com/gradbench/gradbench}" "$GB_SRC"
    [ -z "${GB_REV:-}" ] || git -C "$GB_SRC" checkout "$GB_REV"
  fi
  # 2. data a partial copy may lack: the lstm eval's text can be rebuilt from ADBench
  local text=$GB_SRC/evals/lstm/data/lstm_full.txt
  if [ ! -s "$text" ]; then
    [ -n "${GB_ADBENCH:-}" ] || die "$text is missing: set GB_ADBENCH to a clone of github.com/microsoft/ADBench to rebuild it"
    say "rebuilding $text from ADBench's data/lstm/lstm_l2_c4096.txt"
    mkdir -p "$(dirname "$text")"
    python3 "$HERE/scripts/lstm_text.py" "$GB_ADBENCH/data/lstm/lstm_l2_c4096.txt" "$text"
  fi
  ls "$GB_SRC"/evals/ht/data/complicated_big/hand12_* >/dev/null 2>&1 ||
    echo "note: the ht eval's hand12 data is missing; run ht with --max 11" >&2
  # 3. the C++ JSON header, which upstream's cpp/Makefile downloads
  if [ ! -s "$GB_SRC/cpp/json.hpp" ]; then
    if ! make -s -C "$GB_SRC/cpp" json.hpp; then
      rm -f "$GB_SRC/cpp/json.hpp"
      [ -f /usr/include/nlohmann/json.hpp ] || die "no cpp/json.hpp: install nlohmann-json3-dev (Debian) or allow the download"
      echo '#include <nlohmann/json.hpp> // the system copy (nlohmann-json3-dev)' >"$GB_SRC/cpp/json.hpp"
    fi
  fi
  # 4. the Python environment, exactly as upstream's uv.lock pins it
  if ! "$PY" -c 'import numpy, scipy, pydantic, dataclasses_json, jax, torch, gradbench' 2>/dev/null; then
    local uv
    uv=$(command -v uv || true)
    if [ -z "$uv" ]; then
      say "installing uv into $GB_HOME/uv"
      python3 -m venv "$GB_HOME/uv" && "$GB_HOME/uv/bin/pip" install -q uv
      uv=$GB_HOME/uv/bin/uv
    fi
    say "making $GB_VENV from $GB_SRC/uv.lock"
    (cd "$GB_SRC" && UV_PROJECT_ENVIRONMENT=$GB_VENV "$uv" sync --locked --no-default-groups \
      --group gradbench --group numpy --group scipy --group pydantic --group dataclasses-json \
      --group jax --group torch)
  fi
  # 5. the GradBench CLI and the manual tool (every eval checks outputs against manual)
  if ! (cli >/dev/null 2>&1); then
    say "building the GradBench CLI"
    (cd "$GB_SRC" && cargo build --locked --release --package gradbench)
  fi
  say "building the manual tool"
  make -s -C "$GB_SRC/tools/manual" -j"$(nproc)"
  # 6. this tool
  build_tool
  say "set up: $GB_SRC, $GB_VENV, $TOOL_BIN"
}

build_tool() {
  say "building tapegrad-gradbench (features: ${GB_FEATURES:-none})"
  (cd "$REPO" && CARGO_TARGET_DIR=$TOOL_TARGET RUSTFLAGS="${RUSTFLAGS:--C target-cpu=native}" \
    cargo build --release -p tapegrad-gradbench ${GB_FEATURES:+--features "$GB_FEATURES"})
}

run() {
  [ $# -ge 2 ] || die "usage: run EVAL TOOL [ARGS...]"
  local eval=$1 tool=$2 toolcmd
  shift 2
  local args=("$@")
  if [ ${#args[@]} -eq 0 ] && [ "$eval" = ht ] && ! ls "$GB_SRC"/evals/ht/data/complicated_big/hand12_* >/dev/null 2>&1; then
    args=(--max 11)
  fi
  case $tool in
    tapegrad) [ -x "$TOOL_BIN" ] || build_tool; toolcmd="$TOOL_BIN --threads $GB_THREADS" ;;
    manual) toolcmd="$PY python/gradbench/gradbench/cpp.py manual" ;;
    pytorch | jax) toolcmd="$PY python/gradbench/gradbench/tools/$tool/run.py" ;;
    *) [ -n "${GB_TOOL_CMD:-}" ] || die "unknown tool $tool (tapegrad, manual, pytorch, jax, or set GB_TOOL_CMD)"
      toolcmd=$GB_TOOL_CMD ;;
  esac
  local out=$GB_RESULTS/$eval
  mkdir -p "$out"
  local log=$out/$tool.log
  {
    echo "# $(date -Is) $eval ${args[*]:-} against $tool ($toolcmd), $GB_THREADS thread(s), $(nproc) cores"
    echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  } | tee "$log" >&2
  local rc=0
  (cd "$GB_SRC" && PYTHONPATH=$GB_SRC/python/gradbench OMP_NUM_THREADS=$GB_THREADS \
    OPENBLAS_NUM_THREADS=$GB_THREADS NO_COLOR=1 \
    "$(cli)" run --timeout "${GB_TIMEOUT:-3600}" -o "$out/$tool.jsonl" \
    --eval "$PY python/gradbench/gradbench/evals/$eval/run.py ${args[*]:-}" --tool "$toolcmd") 2>&1 |
    tee -a "$log" >&2 || rc=$?
  echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$log" >&2
  gzip -f "$out/$tool.jsonl"
  return $rc
}

case ${1:-} in
  setup) setup ;;
  build) build_tool ;;
  run) shift; run "$@" ;;
  pair) shift; e=$1; shift; run "$e" tapegrad "$@"; run "$e" manual "$@" ;;
  table) shift; GB_RESULTS=$GB_RESULTS "$PY" "$HERE/scripts/table.py" "$@" ;;
  record) shift; GB_SRC=$GB_SRC "$PY" "$HERE/tests/data/record.py" "$@" ;;
  *) sed -n '2,27p' "$0"; exit 2 ;;
esac
