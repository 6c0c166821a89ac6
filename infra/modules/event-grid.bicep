// Event Grid delivery, what can exist before Graph subscribes: the partner configuration that
// authorises Microsoft Graph to create its partner topic in this resource group. Graph creates the
// topic when the app first subscribes with an EventGrid: URL; the topic's activation and its event
// subscription to the call-record queue are infra/event-grid-subscription.bicep, deployed by
// scripts/event-grid-connect.sh once the topic exists.

@description('Until when Microsoft Graph may create partner topics here (ISO 8601, UTC).')
param authorizationExpiry string

param tags object = {}

// One per resource group, named 'default'. Microsoft Graph's partner registration: its name and
// immutable id as Microsoft lists them for the "Microsoft Graph API" verified partner
// (scripts/event-grid-connect.sh checks the id with `az eventgrid partner verified-partner show`).
resource partnerConfiguration 'Microsoft.EventGrid/partnerConfigurations@2025-02-15' = {
  name: 'default'
  location: 'global'
  tags: tags
  properties: {
    partnerAuthorization: {
      defaultMaximumExpirationTimeInDays: 7
      authorizedPartnersList: [
        {
          partnerName: 'MicrosoftGraphAPI'
          partnerRegistrationImmutableId: 'c02e0126-707c-436d-b6a1-175d2748fb58'
          authorizationExpirationTimeInUtc: authorizationExpiry
        }
      ]
    }
  }
}
