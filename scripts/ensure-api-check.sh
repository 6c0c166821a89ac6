#!/usr/bin/env bash
# Installs the pinned schemathesis (tools/requirements-api.txt) into .venv-api once; the contract
# test (tests/it/api_contract.rs) runs .venv-api/bin/schemathesis.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-api
stamp="$venv/.installed-$(sha256sum tools/requirements-api.txt | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tools/requirements-api.txt
  touch "$stamp"
fi
