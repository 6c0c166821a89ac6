#!/usr/bin/env bash
# Event Grid delivery, the one step after the deployment (notificationDelivery=eventGrid): connects
# the partner topic that Microsoft Graph created when the app first subscribed to the app's
# call-record queue. Run it once, as an admin, after the app has started (its start-up run of
# MaintainSubscription creates the Graph subscription, and with it the topic):
#
#   scripts/event-grid-connect.sh <resource group> [deployment name, default: main]
#
# What it does, in order (each step can be run again safely):
#   1. reads the deployment's outputs (topic name, storage account, dead-letter container);
#   2. checks that "MicrosoftGraphAPI" is the verified partner whose immutable id the partner
#      configuration authorises (infra/modules/event-grid.bicep);
#   3. waits until Graph has created the partner topic (up to 10 minutes);
#   4. gives the topic a system-assigned identity (the identity that writes into the queue);
#   5. activates the topic (the partnerTopics/activate action);
#   6. deploys infra/event-grid-subscription.bicep: the event subscription to the queue with that
#      identity, dead-lettering, and the identity's two roles (Queue Data Message Sender on the
#      queue, Blob Data Contributor on the dead-letter container).
# Needs: Azure CLI 2.60+ with Bicep, and on the resource group EventGrid Contributor (or
# Contributor) plus the right to assign roles (Owner, or User Access Administrator).
set -euo pipefail

group=${1:?usage: scripts/event-grid-connect.sh <resource group> [deployment name]}
deployment=${2:-main}
api=2025-02-15

output() {
  az deployment group show -g "$group" -n "$deployment" \
    --query "properties.outputs.$1.value" -o tsv
}
topic=$(output eventGridPartnerTopicName)
account=$(output storageAccountName)
container=$(output eventGridDeadLetterContainer)
if [ -z "$topic" ]; then
  echo "the deployment '$deployment' is not in eventGrid mode (notificationDelivery=eventGrid)" >&2
  exit 1
fi

expected=c02e0126-707c-436d-b6a1-175d2748fb58
listed=$(az eventgrid partner verified-partner show --verified-partner-name MicrosoftGraphAPI \
  --query partnerRegistrationImmutableId -o tsv 2>/dev/null || true)
if [ -n "$listed" ] && [ "$listed" != "$expected" ]; then
  echo "Microsoft Graph's partner registration id is $listed, not $expected:" >&2
  echo "set it in infra/modules/event-grid.bicep, redeploy, and run this again" >&2
  exit 1
fi

sub=$(az account show --query id -o tsv)
id="/subscriptions/$sub/resourceGroups/$group/providers/Microsoft.EventGrid/partnerTopics/$topic"
echo "waiting for Graph to create partner topic $topic ..."
for _ in $(seq 1 60); do
  if az rest --method get --uri "https://management.azure.com$id?api-version=$api" >/dev/null 2>&1; then
    break
  fi
  sleep 10
done
state=$(az rest --method get --uri "https://management.azure.com$id?api-version=$api" \
  --query properties.activationState -o tsv) || {
  echo "partner topic $topic does not exist: has the app started and subscribed? See HealthDetails → subscription.lastError" >&2
  exit 1
}

echo "giving $topic a system-assigned identity ..."
az rest --method patch --uri "https://management.azure.com$id?api-version=$api" \
  --body '{"identity":{"type":"SystemAssigned"}}' >/dev/null

if [ "$state" != "Activated" ]; then
  echo "activating $topic ..."
  az rest --method post --uri "https://management.azure.com$id/activate?api-version=$api" >/dev/null
fi

echo "creating the event subscription to the queue ..."
az deployment group create -g "$group" -n event-grid-subscription \
  -f "$(dirname "$0")/../infra/event-grid-subscription.bicep" \
  -p partnerTopicName="$topic" storageAccountName="$account" deadLetterContainerName="$container" \
  --query properties.outputs.eventSubscriptionId.value -o tsv

echo "done: Graph's events now reach the queue. HealthDetails → delivery says eventGrid; the health"
echo "check reports eventGridSilent if records keep being found by reconciliation alone."
