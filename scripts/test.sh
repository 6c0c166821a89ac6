#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs the pinned Azurite (npm), schemathesis (pip, in
# .venv-api) and infrastructure checkers (pip, in .venv-infra), then format check, lints, Bicep parse and scan, the deployment package and
# its layout check, and every test (unit,
# integration against Azurite and the Graph simulator, host-protocol checks). Ends with one total line.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-node-deps.sh
scripts/ensure-api-check.sh

cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
scripts/check-infra.sh
scripts/package.sh
python3 tools/check_package.py

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The few doc tests (the table_storage crate's README example and a `$filter` example) are not run
# here; `cargo test -p table_storage --doc` runs them.
set +e
cargo test --locked --workspace --lib --bins --tests 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
