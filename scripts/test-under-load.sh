#!/usr/bin/env bash
# The whole test suite on a loaded machine: four CPU hogs (`yes > /dev/null`, at the
# suite's own priority) beside it. A test that waits for the clock instead of the event
# fails here first. Not part of CI: one run takes about 35-50 minutes on two cores.
#
#   scripts/test-under-load.sh                # one run beside the four hogs
#   scripts/test-under-load.sh RUNS           # RUNS runs in a row
#   scripts/test-under-load.sh RUNS LANES     # LANES suites side by side, RUNS each
#   scripts/test-under-load.sh 5 1 tests/test_cluster_calls.py   # more goes to pytest
#
# It tests the commit checked out (HEAD, not uncommitted changes): a clone in a temporary
# directory, installed once with scripts/test.sh (which also installs what the tests need),
# then `python3 -m pytest` from a fresh copy of that clone for every run. With LANES > 1
# every suite also has the other suites beside it (a heavier load than the hogs alone), and
# runs in its own loopback-only network namespace (`unshare -n`, so root) so that the
# free ports the suites pick cannot collide, with a TMPDIR of its own.
# Its work directory is made under $TMPDIR (default /tmp).
# One line per run as it ends, then the last line
# `under load: runs=N passed=P failed=F lanes=L hogs=4`; exit status 0 only when every
# run passed. Each run's log stays in the printed directory.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
runs=${1:-1}
lanes=${2:-1}
shift $(($# < 2 ? $# : 2))
pytest_args=(-p no:cacheprovider -q --durations=20 "$@")
hogs=4
if [[ ! $runs =~ ^[1-9][0-9]*$ || ! $lanes =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [RUNS] [LANES] (positive integers)" >&2
  exit 2
fi
if [ "$lanes" -gt 1 ] && ! unshare -n true 2>/dev/null; then
  echo "test-under-load: LANES > 1 needs unshare -n (root): the suites' ports would collide" >&2
  exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/esl-bridge-load.XXXXXX")
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done # gone, not dying
}
trap stop EXIT
trap 'exit 130' INT TERM

git clone --quiet "$root" "$work/src"
commit=$(git -C "$work/src" rev-parse --short HEAD)
echo "test-under-load: commit $commit, $runs run(s) in each of $lanes lane(s), $hogs hogs; logs in $work"
# Install once (packages, test extras, Node's jsonwebtoken under .test-deps/), unless
# TEST_UNDER_LOAD_INSTALL=0 says it is done (the suite's own test of this script).
if [ "${TEST_UNDER_LOAD_INSTALL:-1}" != 0 ] &&
  ! (cd "$work/src" && scripts/test.sh --collect-only -q -p no:cacheprovider) >"$work/install.log" 2>&1; then
  echo "test-under-load: installing failed, see $work/install.log" >&2
  exit 1
fi

for _ in $(seq "$hogs"); do
  yes >/dev/null &
  pids+=("$!")
done
echo "test-under-load: hogs ${pids[*]}"

lane() {
  local n=$1 i dir log start status last
  for i in $(seq "$runs"); do
    dir=$work/lane$n
    rm -rf "$dir" "$dir.tmp"
    cp -a "$work/src" "$dir"
    mkdir "$dir.tmp"
    log=$work/lane${n}_run$i.log
    start=$(date +%s)
    set +e
    if [ "$lanes" -gt 1 ]; then
      (cd "$dir" && TMPDIR=$dir.tmp unshare -n sh -c \
        'ip link set lo up && exec python3 -m pytest "$@"' sh "${pytest_args[@]}" >"$log" 2>&1)
    else
      (cd "$dir" && TMPDIR=$dir.tmp python3 -m pytest "${pytest_args[@]}" >"$log" 2>&1)
    fi
    status=$?
    set -e
    last=$(grep -E "[0-9]+ (passed|failed|error)" "$log" | tail -n 1 || true)
    echo "lane $n run $i commit $commit exit=$status wall=$(($(date +%s) - start))s ${last:-no summary}"
    grep -E "^(FAILED|ERROR) " "$log" | sort -u || true
  done
}

lane_pids=()
for n in $(seq "$lanes"); do
  : >"$work/lane$n.out"
  lane "$n" >"$work/lane$n.out" &
  lane_pids+=("$!")
done
pids+=("${lane_pids[@]}")
# Lines as runs end, in the order they end.
tail -q -n +1 -F "$work"/lane*.out &
pids+=("$!")
wait "${lane_pids[@]}" || true
sleep 1 # let tail print the last lines

total=$((runs * lanes))
passed=$(cat "$work"/lane*.out | grep -c '^lane .* exit=0 ' || true)
echo "under load: runs=$total passed=$passed failed=$((total - passed)) lanes=$lanes hogs=$hogs"
[ "$passed" -eq "$total" ]
