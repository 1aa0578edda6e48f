#!/usr/bin/env bash
# Mutation testing of the pure modules with mutmut (pip install '.[mutation]').
# Not part of CI: it takes tens of minutes on two cores.
#
#   scripts/mutation.sh                       # the modules below, with their fast tests
#   scripts/mutation.sh esl_bridge/numbers.py # only the given files (same tests)
#
# It works on a copy of the tree in a temporary directory (mutmut rewrites the code it
# mutates), so the working tree is never touched and other test runs are not disturbed.
# MUTATION_JOBS sets the number of parallel workers (default 2); MUTATION_KEEP=1 keeps
# the copy (its path is printed) to look at survivors with `python3 -m mutmut show NAME`.
# The last line is `mutation: killed=K survived=S score=P%`; S counts every mutant the
# tests did not kill (survived, no test covering it, suspicious).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

modules=("$@")
if [ "${#modules[@]}" -eq 0 ]; then
  modules=(
    esl_bridge/core/*.py
    esl_bridge/esl/protocol.py
    esl_bridge/esl/commands.py
    esl_bridge/numbers.py
    esl_bridge/signaling/auth.py
    esl_bridge/signaling/protocol.py
  )
fi

# The fast tests that cover those modules: pure (no browser, no network, no simulator
# process). mutmut runs, for each mutant, only those of them that reach the mutated function.
tests=(
  tests/test_numbers.py
  tests/test_state_numbers.py
  tests/test_call.py
  tests/test_invitations.py
  tests/test_peer_messages.py
  tests/test_unicast_gate.py
  tests/test_esl_protocol.py
  tests/test_esl_commands.py
  tests/test_signaling_protocol.py
  tests/test_jwt_tokens.py
  tests/test_forged_tokens.py
  tests/test_mutation_kills.py
)
# test_jwt_tokens.py also logs in through a hub and runs Node: only its pure checks.
deselect=(
  "tests/test_jwt_tokens.py::test_node_jsonwebtoken_token_is_accepted"
  "tests/test_jwt_tokens.py::test_node_token_logs_in_through_the_hub"
  "tests/test_jwt_tokens.py::test_pyjwt_token_logs_in_through_the_hub"
)

if ! python3 -c "import mutmut" 2>/dev/null; then
  echo "mutation.sh: mutmut is not installed (pip install '.[mutation]')" >&2
  exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/esl-bridge-mutation.XXXXXX")
cleanup() {
  if [ "${MUTATION_KEEP:-0}" = 1 ]; then
    echo "mutation.sh: kept $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

# The repository's files as they are now (committed or not; tests read README.rst, docs/ ...).
git ls-files -z --cached --others --exclude-standard \
  | tar -C "$root" --null -T - --ignore-failed-read -cf - \
  | tar -C "$work" -xf -
cd "$work"
# mutmut reads its settings from setup.cfg; the copy gets them, the repository does not.
{
  printf '\n[mutmut]\nsource_paths = esl_bridge\nalso_copy =\n'
  for f in *; do
    if [ "$f" != esl_bridge ]; then printf '    %s\n' "$f"; fi
  done
  printf 'only_mutate =\n'
  for m in "${modules[@]}"; do printf '    %s\n' "$m"; done
  printf 'pytest_add_cli_args_test_selection =\n'
  for t in "${tests[@]}"; do
    if [ -e "$root/$t" ]; then printf '    %s\n' "$t"; fi
  done
  printf 'pytest_add_cli_args =\n    -p\n    no:cacheprovider\n'
  for d in "${deselect[@]}"; do printf '    --deselect\n    %s\n' "$d"; done
} >>setup.cfg

status=0
python3 -m mutmut run --max-children "${MUTATION_JOBS:-2}" </dev/null || status=$?
if [ "$status" -ne 0 ]; then
  echo "mutation.sh: mutmut run failed (status $status)" >&2
  exit "$status"
fi

# One line per mutant: "name: status". Killed: a test failed on the mutant, or it ran
# past the timeout (an endless loop the tests would not let through either).
python3 -m mutmut results --all true >results.txt
grep -v -E ': (killed|timeout)$' results.txt | sed 's/^ */  /' >&2 || true
killed=$(grep -c -E ': (killed|timeout)$' results.txt || true)
total=$(grep -c ': ' results.txt || true)
survived=$((total - killed))
if [ "$total" -eq 0 ]; then
  echo "mutation.sh: no mutants were tested" >&2
  echo "mutation: killed=0 survived=0 score=n/a"
  exit 1
fi
score=$(awk -v k="$killed" -v t="$total" 'BEGIN { printf "%.1f", 100 * k / t }')
echo "mutation: killed=$killed survived=$survived score=$score%"
