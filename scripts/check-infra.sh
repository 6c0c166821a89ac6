#!/usr/bin/env bash
# Parses and security-scans the Bicep templates (there is no Bicep CLI here): installs the pinned
# checkov and pycep-parser into .venv-infra once, then runs tools/check_infra.py.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-infra
stamp="$venv/.installed-$(sha256sum tools/requirements-infra.txt | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tools/requirements-infra.txt
  # checkov pins pycep-parser 0.5.1, which cannot parse `extension` (and checkov then skips the file
  # silently); 0.7.1 can.
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps pycep-parser==0.7.1
  touch "$stamp"
fi
"$venv/bin/python" tools/check_infra.py
