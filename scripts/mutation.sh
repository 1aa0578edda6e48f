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
# the copy (its path is printed) to look at survivors with `python3 -m mutmut show NAME`;
# MUTATION_REPORT=<kept copy> only prints the summary of that copy again.
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
  tests/test_numbers_errors.py
  tests/test_state_numbers.py
  tests/test_call.py
  tests/test_click_to_call_core.py
  tests/test_callbook_conference.py
  tests/test_conference_core.py
  tests/test_call_endings.py
  tests/test_call_kinds.py
  tests/test_callbook_admission.py
  tests/test_conference_replies.py
  tests/test_invitations.py
  tests/test_invitation_api.py
  tests/test_peer_messages.py
  tests/test_peer_message_fields.py
  tests/test_peer_json_depth.py
  tests/test_unicast_gate.py
  tests/test_gate_snapshot.py
  tests/test_media_verdict.py
  tests/test_browser_hold.py
  tests/test_esl_protocol.py
  tests/test_channel_record.py
  tests/test_esl_commands.py
  tests/test_esl_command_bytes.py
  tests/test_esl_command_endpoints.py
  tests/test_esl_command_refusals.py
  tests/test_signaling_protocol.py
  tests/test_signaling_replies.py
  tests/test_jwt_tokens.py
  tests/test_forged_tokens.py
  tests/test_token_edges.py
  tests/test_signaling_refusals.py
  tests/test_esl_protocol_edges.py
  tests/test_esl_command_values.py
  tests/test_conference_edges.py
  tests/test_peer_json_refusals.py
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

if [ -n "${MUTATION_REPORT:-}" ]; then
  # Only the summary of a copy kept by an earlier run (MUTATION_KEEP=1).
  work=$MUTATION_REPORT
  MUTATION_KEEP=1
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/esl-bridge-mutation.XXXXXX")
fi
if [ "${MUTATION_KEEP:-0}" = 1 ]; then
  echo "mutation.sh: the copy is kept in $work" >&2
else
  trap 'rm -rf "$work"' EXIT
fi

if [ -z "${MUTATION_REPORT:-}" ]; then
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
  # One Hypothesis seed for every mutant: a kill or a survival does not depend on chance.
  # support.mutation_plugin empties the core's table caches before each test and loads
  # the Hypothesis profile "mutation" (no shrinking). The plugins left out cost time in
  # every worker's pytest run and judge nothing here (pytest-benchmark asks git for a tag;
  # the unraisable-exception hook runs five full garbage collections at the end).
  printf 'pytest_add_cli_args =\n'
  for a in -p no:cacheprovider -p no:benchmark -p no:unraisableexception \
    -p support.mutation_plugin --hypothesis-seed=0; do
    printf '    %s\n' "$a"
  done
  for d in "${deselect[@]}"; do printf '    --deselect\n    %s\n' "$d"; done
} >>setup.cfg

status=0
# The plugin is imported before pytest puts tests/ on the path; ESL_BRIDGE_MUTATION=1
# scales down the property tests' example counts (tests/support/budget.py).
export PYTHONPATH="$work/tests${PYTHONPATH:+:$PYTHONPATH}"
export ESL_BRIDGE_MUTATION=1
python3 -m mutmut run --max-children "${MUTATION_JOBS:-2}" </dev/null || status=$?
if [ "$status" -ne 0 ]; then
  echo "mutation.sh: mutmut run failed (status $status)" >&2
  exit "$status"
fi
fi
cd "$work"

# Workers fork from a process that already imported the code, so a function the module
# itself calls at import time (the transition tables: LOCAL_TABLE = _local_table()) ran
# unmutated there and its mutants survive whatever the tests do (docs/mutation.rst). They
# count as survivors; how many there are is printed.
at_import=$(python3 - <<'PY'
import ast
import json
import pathlib

count = 0
for meta in pathlib.Path("mutants").rglob("*.py.meta"):
    source = pathlib.Path(str(meta)[: -len(".meta")])
    tree = ast.parse(source.read_text())
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    called = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        for call in ast.walk(node):
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name):
                if call.func.id in defined:
                    called.add(call.func.id)
    codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
    for name, code in codes.items():
        function = name.rsplit(".", 1)[-1].split("__mutmut_")[0]
        if code == 0 and function.startswith("x_") and function[2:] in called:
            count += 1
print(count)
PY
)

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
echo "mutation.sh: $at_import of the $survived survivors are in functions called at import time"
echo "mutation: killed=$killed survived=$survived score=$score%"
