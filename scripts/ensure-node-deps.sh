#!/usr/bin/env bash
# Installs the npm packages pinned in package-lock.json (Azurite) unless they are already there.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "Node.js and npm are needed for the Azurite storage emulator (https://nodejs.org, version 20 or later)." >&2
  exit 1
fi
stamp=node_modules/.package-lock.json
if [ ! -f node_modules/azurite/package.json ] || [ package-lock.json -nt "$stamp" ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
