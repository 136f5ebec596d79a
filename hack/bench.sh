#!/usr/bin/env bash
# Run the benchmarks: bench/<name>.py for each NAME given, or every bench when none.
#
#   bash hack/bench.sh [--smoke] [--thirdparty] [NAME...]
#
#   --smoke       tiny sizes (seconds each): checks that the benches still work; the numbers mean little
#   --thirdparty  first create the throwaway venvs of third-party drift libraries (alibi-detect, evidently)
#                 from PyPI, each pip install limited to 5 minutes, under $TRITONOPS_BENCH_VENVS
#                 (default ~/.cache/tritonops/bench-venvs); bench/drift_detectors.py times them when present
#                 and records why when not
#
# Each bench prints its tables and writes bench/results/<name>.json (not committed). Exits non-zero when
# any bench fails (a bench that measured nothing fails too).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
VENVS=${TRITONOPS_BENCH_VENVS:-$HOME/.cache/tritonops/bench-venvs}
PIP_TIMEOUT=${TRITONOPS_BENCH_PIP_TIMEOUT:-300}

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

# install_lib NAME PIP-ARGS...: a venv with NAME installed, or NAME.failed saying why.
install_lib() {
  local name=$1 dir=$VENVS/$1 start=$SECONDS
  shift
  [[ -x $dir/bin/python && ! -e $VENVS/$name.failed ]] && { echo "$name: already in $dir"; return 0; }
  rm -rf "$dir" "$VENVS/$name.failed" "$VENVS/$name.install-seconds"
  mkdir -p "$VENVS"
  echo "$name: pip install $* into $dir (at most ${PIP_TIMEOUT}s)"
  if "$PY" -m venv "$dir" && timeout "$PIP_TIMEOUT" "$dir/bin/pip" install -q "$@" >"$VENVS/$name.log" 2>&1; then
    echo "$((SECONDS - start))" >"$VENVS/$name.install-seconds"
  else
    local rc=$?
    { [[ $rc == 124 ]] && echo "pip install $* took over ${PIP_TIMEOUT}s" ||
        echo "pip install $* failed ($rc): $(tail -n 3 "$VENVS/$name.log" | tr '\n' ' ')"; } >"$VENVS/$name.failed"
    rm -rf "$dir"
    echo "$name: $(cat "$VENVS/$name.failed")" >&2
  fi
}

smoke=() thirdparty=0 names=()
for arg in "$@"; do
  case $arg in
    --smoke) smoke=(--smoke) ;;
    --thirdparty) thirdparty=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "unknown option $arg" >&2; usage >&2; exit 2 ;;
    *) names+=("$arg") ;;
  esac
done
if [[ ${#names[@]} == 0 ]]; then
  for file in bench/*.py; do
    name=$(basename "$file" .py)
    [[ $name == thirdparty ]] && continue  # runs inside the third-party venvs, not a bench
    grep -q '^def main(' "$file" && names+=("$name")  # helpers (common, cluster, ...) have no main
  done
fi
for name in "${names[@]}"; do
  [[ -f bench/$name.py ]] || { echo "no bench named $name (bench/$name.py)" >&2; exit 2; }
done
if [[ $thirdparty == 1 ]]; then
  install_lib alibi-detect alibi-detect
  install_lib evidently evidently 'pandas<3'  # evidently 0.7 imports a helper pandas 3 removed
fi

failed=()
for name in "${names[@]}"; do
  printf '\n== bench %s %s\n' "$name" "${smoke[*]}"
  start=$SECONDS
  if "$PY" -m "bench.$name" "${smoke[@]}"; then
    echo "== $name: $((SECONDS - start))s"
  else
    echo "== $name FAILED after $((SECONDS - start))s" >&2
    failed+=("$name")
  fi
done
if [[ ${#failed[@]} != 0 ]]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
