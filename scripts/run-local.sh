#!/usr/bin/env bash
# Runs the app locally with no Azure account: Azurite on its default ports (data kept in .azurite/)
# and the handler in standalone mode on http://localhost:7071. It answers Graph's validation
# handshake, posts the documented call-record notification to itself and shows the queue message it
# produced, then keeps serving until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-node-deps.sh
cargo build --locked --release

mkdir -p .azurite
node_modules/.bin/azurite --silent --skipApiVersionCheck --disableTelemetry --location .azurite \
  --debug .azurite/debug.log >/dev/null &
azurite_pid=$!
handler_pid=
cleanup() {
  [ -n "$handler_pid" ] && kill "$handler_pid" 2>/dev/null || true
  kill "$azurite_pid" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

export AzureWebJobsStorage="UseDevelopmentStorage=true"
export GRAPH_TENANT_ID="${GRAPH_TENANT_ID:-84bd8158-6d4d-4958-8b9f-9d6445542f95}"
export NOTIFICATION_CLIENT_STATE="${NOTIFICATION_CLIENT_STATE:-local-client-state}"
export PORT="${PORT:-7071}"
export RUST_LOG="${RUST_LOG:-info}"

for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/10001) 2>/dev/null && break
  sleep 0.1
done
target/release/teams-cdr-functions standalone &
handler_pid=$!
base="http://127.0.0.1:$PORT"
for _ in $(seq 1 100); do
  curl -fs "$base/" >/dev/null 2>&1 && break
  sleep 0.1
done

echo "--- Graph validation handshake:"
curl -s -X POST "$base/api/notifications?validationToken=Validation%3A+hello+from+Graph"; echo
echo "--- Documented call-record notification:"
sed -e "s/{Call id}/2f1a1100-b174-40a0-aba7-0b405e01ed92/g" \
    -e "s/{Secret client state}/$NOTIFICATION_CLIENT_STATE/" \
    -e "s/{Organization\/Tenant id}/$GRAPH_TENANT_ID/" \
    -e "s/{Subscription id}/local-subscription/" tests/fixtures/graph/change-notification-callrecords.json |
  curl -s -o /dev/null -w "HTTP %{http_code}\n" -X POST -H 'Content-Type: application/json' --data-binary @- "$base/api/notifications"
echo "--- Queue callrecord-ids now holds (peeked, base64-decoded):"
node - <<'JS' || true
// Peek with an account SAS signed from Azurite's well-known development key.
const crypto = require("crypto"), http = require("http");
const account = "devstoreaccount1";
const key = Buffer.from("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==", "base64");
const se = new Date(Date.now() + 600000).toISOString().replace(/\.\d+Z$/, "Z");
const toSign = [account, "r", "q", "o", "", se, "", "http", "2021-08-06", "", ""].join("\n");
const sig = crypto.createHmac("sha256", key).update(toSign).digest("base64");
const sas = new URLSearchParams({sv: "2021-08-06", ss: "q", srt: "o", sp: "r", se, spr: "http", sig}).toString();
http.get(`http://127.0.0.1:10001/${account}/callrecord-ids/messages?peekonly=true&numofmessages=32&${sas}`, (res) => {
  let body = "";
  res.on("data", (c) => body += c);
  res.on("end", () => {
    const texts = [...body.matchAll(/<MessageText>([^<]*)<\/MessageText>/g)].map((m) => Buffer.from(m[1], "base64").toString());
    console.log(texts.length ? texts.join("\n") : `(nothing, HTTP ${res.statusCode})`);
  });
});
JS
echo "--- Serving $base (webhooks at /api/notifications and /api/lifecycle). Ctrl-C stops."
wait "$handler_pid"
