#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs the pinned Azurite (npm), then format check, lints
# and every test (unit, integration against Azurite, host-protocol checks).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-node-deps.sh

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --all-targets
