#!/usr/bin/env bash
# After a deployment: checks over HTTPS that Graph can validate both webhooks, and that the app
# refuses what it must refuse. Usage: scripts/smoke.sh <host name> (the `hostName` output of main.bicep).
set -euo pipefail
host=${1:?usage: scripts/smoke.sh <function app host name>}
base="https://$host"
fail=0
check() { # what, expected, actual
  if [ "$2" = "$3" ]; then echo "ok   $1"; else echo "FAIL $1: expected $2, got $3"; fail=1; fi
}
token="Validation: smoke test $(date +%s)"
encoded=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote_plus(sys.argv[1]))' "$token")
for route in notifications lifecycle; do
  body=$(curl -sS --proto '=https' --tlsv1.2 -X POST -H 'Content-Type: text/plain' "$base/api/$route?validationToken=$encoded")
  check "validation handshake on /api/$route" "$token" "$body"
done
status=$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data '{"value":' "$base/api/notifications")
check "malformed notification is refused" 400 "$status"
status=$(curl -sS -o /dev/null -w '%{http_code}' "http://$host/api/notifications" || true)
check "plain HTTP is redirected to HTTPS (httpsOnly)" 301 "$status"
health=$(curl -sS "$base/api/health" || true)
echo "     health: $health (details: GET $base/api/health/details with a function key)"
case "$health" in
  *'"ok"'* | *'"degraded"'*) check "health answers with a verdict" yes yes ;;
  *'"failing"'*) check "health is not failing" ok failing ;;
  *) check "health answers with a verdict" '{"status":…}' "$health" ;;
esac
status=$(curl -sS -o /dev/null -w '%{http_code}' "$base/api/health/details")
check "health details need a key" 401 "$status"
exit $fail
