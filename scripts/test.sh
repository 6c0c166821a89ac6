#!/usr/bin/env bash
# The test suite.
#
#   scripts/test.sh          everything, as CI runs it (.ci/run calls exactly this): installs the
#                            pinned Azurite (npm), schemathesis (pip, in .venv-api) and the
#                            infrastructure checkers (pip, in .venv-infra); then the format check,
#                            the lints, the Bicep parse and scan, the deployment package and its
#                            layout check, every unit, doc and integration test, and last the soak
#                            tests (the month of report rows, the reliability day, and a shorter
#                            reliability day with Event Grid delivery), each in a process of its
#                            own so that its Azurite holds only its data.
#   scripts/test.sh --fast   the tier for your own loop: the format check, the lints and every test
#                            but the soak tests (what plain `cargo test --workspace` runs too).
#
# Ends with one total line over every test run.
set -euo pipefail
cd "$(dirname "$0")/.."

fast=false
case "${1:-}" in
  --fast) fast=true ;;
  "") ;;
  *) echo "usage: scripts/test.sh [--fast]" >&2; exit 2 ;;
esac

scripts/ensure-node-deps.sh
scripts/ensure-api-check.sh

cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
if ! $fast; then
  scripts/check-infra.sh
  scripts/package.sh
  python3 tools/check_package.py
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# Runs a test command, its output to the terminal and the log; remembers a failure and goes on, so
# that one failing part does not hide the others.
run() {
  local code
  set +e
  "$@" 2>&1 | tee -a "$log"
  code=${PIPESTATUS[0]}
  set -e
  if [ "$code" -ne 0 ]; then status=$code; fi
}

run cargo test --locked --workspace
if ! $fast; then
  # `#[ignore]`d in the tests, so that `cargo test` leaves them out; here each runs alone.
  # The reliability day twice: as deployed by default (webhooks), then a shorter day with Event
  # Grid delivery (DAY_DELIVERY, DAY_CALLS: tests/it/soak/reliability_day.rs).
  # `--workspace` (the `it` binary is the root package's only) and not `-p`: a `-p` build resolves
  # features for one package and so builds every dependency a second time, which once took a CI
  # run's disk.
  for soak in soak::reports_month soak::reliability_day "eventGrid:soak::reliability_day"; do
    before=$(wc -l <"$log")
    case "$soak" in
      eventGrid:*)
        soak=${soak#eventGrid:}
        run env DAY_DELIVERY=eventGrid DAY_CALLS=1500 \
          cargo test --locked --workspace --test it "$soak" -- --ignored
        ;;
      *) run cargo test --locked --workspace --test it "$soak" -- --ignored ;;
    esac
    # A renamed test would leave the filter matching nothing, and nothing failing.
    if ! tail -n +"$((before + 1))" "$log" | grep -q '^test result: .* 1 passed'; then
      echo "$soak: expected exactly one test to run and pass" >&2
      status=1
    fi
  done
fi

awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
