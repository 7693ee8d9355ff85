#!/usr/bin/env bash
# Runs node's test runner over every *.test.ts below the given folders (or files), in a stable order, and ends with
# the slowest files. `--beside FILE` (repeatable) runs that file, if the folders hold it, in a second runner at the
# same time as the rest (one after another, in path order as node's runner sorts them), its output printed after the
# rest's: for the long real-node files, which wait on kubelets far more than they use the CPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
beside_wanted=()
dirs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --beside) beside_wanted+=("$2"); shift 2 ;;
    *) dirs+=("$1"); shift ;;
  esac
done
files=()
for dir in "${dirs[@]}"; do
  [ -e "$dir" ] || continue
  while IFS= read -r f; do files+=("$f"); done < <(find "$dir" -name '*.test.ts' -not -path '*/node_modules/*' | sort)
done
if [ ${#files[@]} -eq 0 ]; then echo "no test files under: ${dirs[*]}" >&2; exit 1; fi

beside=()
for wanted in "${beside_wanted[@]}"; do
  for i in "${!files[@]}"; do
    if [ "${files[$i]}" = "$wanted" ]; then beside+=("$wanted"); unset 'files[i]'; fi
  done
done
files=("${files[@]}")

out="$(mktemp -d)"
beside_pid=""
main_pid=""
trap 'rm -rf "$out"' EXIT
# Both runners by pid (each stops its files' processes on TERM); the rest waits in `wait`, which a signal interrupts.
trap 'for p in $main_pid $beside_pid; do kill -TERM "$p" 2>/dev/null || true; done; wait; exit 143' INT TERM
# The runner's options but the timings' destination (each runner's own file).
runner=(node --import tsx --test --test-concurrency="${TEST_CONCURRENCY:-1}" --test-reporter=spec
  --test-reporter-destination=stdout --test-reporter=./scripts/test-timings.ts)

if [ ${#beside[@]} -gt 0 ]; then
  echo "run-tests: ${beside[*]} run beside the other ${#files[@]} files; their output follows the others'"
  # node itself in the background (no subshell between), so the trap's TERM reaches the runner that stops its files.
  "${runner[@]}" --test-reporter-destination="$out/beside.jsonl" "${beside[@]}" >"$out/beside.log" 2>&1 &
  beside_pid=$!
fi
status=0
if [ ${#files[@]} -gt 0 ]; then
  "${runner[@]}" --test-reporter-destination="$out/main.jsonl" "${files[@]}" &
  main_pid=$!
  wait "$main_pid" || status=$?
fi
main_seconds=$SECONDS
if [ -n "$beside_pid" ]; then
  beside_status=0
  wait "$beside_pid" || beside_status=$?
  echo
  echo "run-tests: ── ${beside[*]} (ran beside the others) ──"
  cat "$out/beside.log"
  if [ "$beside_status" -ne 0 ]; then status=$beside_status; fi
fi
echo
echo "run-tests: ${SECONDS} s in all; ${#files[@]} file(s) in one runner ${main_seconds} s$(
  [ -f "$out/beside.jsonl" ] && echo "; beside them ${beside[*]} $(node -e 'let ms = 0; for (const l of require("fs").readFileSync(process.argv[1], "utf8").split("\n")) if (l) ms += JSON.parse(l).ms ?? 0; console.log(Math.round(ms / 1000))' "$out/beside.jsonl") s (their files' sum)")"
node --import tsx scripts/test-timings.ts "$root" "$out/main.jsonl" "$out/beside.jsonl" || true
exit "$status"
