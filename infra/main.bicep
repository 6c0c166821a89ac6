// Teams CDR Functions: everything the app needs in one resource group, with no secret anywhere.
//
//   az deployment group create -g <rg> -f infra/main.bicep -p infra/main.bicepparam
//
// Creates a user-assigned managed identity; a storage account with shared-key access off and only
// that identity's data-plane roles; workspace-based Application Insights; a Flex Consumption Linux
// function app (runtime `custom`) with identity-based storage; and, unless `grantGraphPermission` is
// false, the Graph application permission CallRecords.Read.All for the identity (which needs an Entra
// role: Privileged Role Administrator, or an app with AppRoleAssignment.ReadWrite.All).

@description('Azure region for every resource.')
param location string = resourceGroup().location

@description('Short name used to derive resource names (lower-case letters and digits).')
@minLength(3)
@maxLength(9)
param baseName string = 'teamscdr'

@description('Function app name; must be globally unique.')
param functionAppName string = 'func-${toLower(baseName)}-${uniqueString(resourceGroup().id)}'

@description('Storage account name; must be globally unique, 3-24 lower-case letters and digits.')
param storageAccountName string = take('st${toLower(baseName)}${uniqueString(resourceGroup().id)}', 24)

@description('Grant the Graph application permission CallRecords.Read.All to the app\'s identity here. Set false when the deployer has no Entra role for it; an Entra admin then runs the command in the README once.')
param grantGraphPermission bool = true

@description('How Graph delivers call-record notifications: webhook (HTTPS posts to the two anonymous webhooks) or eventGrid (an Event Grid partner topic writes them into the call-record queue: no inbound endpoint). With eventGrid, run scripts/event-grid-connect.sh once after the first start (docs/ADMIN.md#event-grid-delivery-no-public-endpoint).')
@allowed(['webhook', 'eventGrid'])
param notificationDelivery string = 'webhook'

@description('With eventGrid: the partner topic Graph creates in this resource group (3-50 letters, digits, hyphens).')
@minLength(3)
@maxLength(50)
param eventGridPartnerTopicName string = 'teams-cdr-callrecords'

@description('With eventGrid: until when this resource group authorises Microsoft Graph to create partner topics in it. Graph needs it only when the app first subscribes (and after a subscription was lost for over 30 days): a week from the deployment by default.')
param eventGridAuthorizationExpiry string = dateTimeAdd(utcNow(), 'P7D')

@description('Department and cost centre on call rows: the SyncDirectory timer keeps a Users table in step with Entra ID (users delta query). Off by default; when on, the Graph application permission User.Read.All is granted as well (with grantGraphPermission), and only then.')
param directorySync bool = false

@description('Secret Graph echoes in every notification. Generated on every deployment unless given: pass the current value (app setting NOTIFICATION_CLIENT_STATE) when you redeploy, or the app replaces the subscription at start-up and sweeps the minutes in between.')
@secure()
param notificationClientState string = newGuid()

@description('Days stored call data is kept (the app refuses fewer than 31: Graph keeps records 30 days).')
@minValue(31)
@maxValue(3650)
param retentionDays int = 90

@description('Most instances the app may scale out to. Webhooks and fetches are short; 40 keeps Graph throttling and storage costs bounded.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory per instance (MB). The handler idles under 30 MiB; the largest meetings need a few MB.')
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 512

@description('Microsoft Graph endpoint.')
param graphBaseUrl string = 'https://graph.microsoft.com'

@description('Entra ID authority host.')
param graphAuthorityHost string = environment().authentication.loginEndpoint

@description('Put App Service Authentication (Entra ID) in front of the app for the read API. The app\'s check of the app role comes with the read API, which is not built yet: until then this only validates tokens that are sent.')
param enableReadApiAuth bool = false

@description('Client id of the app registration that protects the read API (when enableReadApiAuth).')
param readApiAppId string = ''

@description('App role callers of the read API must hold (when enableReadApiAuth).')
param readApiRequiredRole string = 'CallData.Read'

@description('E-mail address for alerts (the health check failing, no call record stored). Empty: no alerts are deployed.')
param alertEmail string = ''

@description('Hours without a stored call record after which an alert fires (with alertEmail). Quiet tenants (weekends) want more.')
@minValue(1)
@maxValue(48)
param noRecordAlertHours int = 12

@description('Log retention in the Log Analytics workspace (days).')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

param tags object = {
  app: 'teams-cdr-functions'
}

var deploymentContainerName = 'app-package'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${baseName}'
  location: location
  tags: tags
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    name: storageAccountName
    appPrincipalId: identity.properties.principalId
    deploymentContainerName: deploymentContainerName
    deadLetterContainerName: notificationDelivery == 'eventGrid' ? eventGridDeadLetterContainer : ''
    tags: tags
  }
}

var eventGridDeadLetterContainer = 'event-grid-dead-letter'

// Event Grid delivery: Graph may create its partner topic here (the partner configuration). The
// topic, its activation and its event subscription to the queue follow Graph's first subscription:
// scripts/event-grid-connect.sh with infra/event-grid-subscription.bicep.
module eventGrid 'modules/event-grid.bicep' = if (notificationDelivery == 'eventGrid') {
  name: 'event-grid'
  params: {
    authorizationExpiry: eventGridAuthorizationExpiry
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    baseName: baseName
    publisherPrincipalId: identity.properties.principalId
    retentionDays: logRetentionDays
    tags: tags
  }
}

module app 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    location: location
    name: functionAppName
    identityId: identity.id
    identityClientId: identity.properties.clientId
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: deploymentContainerName
    appInsightsConnectionString: monitoring.outputs.connectionString
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    notificationClientState: notificationClientState
    retentionDays: retentionDays
    graphBaseUrl: graphBaseUrl
    graphAuthorityHost: graphAuthorityHost
    enableReadApiAuth: enableReadApiAuth
    readApiAppId: readApiAppId
    readApiRequiredRole: readApiRequiredRole
    directorySync: directorySync
    notificationDelivery: notificationDelivery
    eventGridPartnerTopicName: eventGridPartnerTopicName
    tags: tags
  }
}

// The Graph permission for the identity (a module, so that the whole Graph part can be left out).
module graphPermission 'modules/graph-permission.bicep' = if (grantGraphPermission) {
  name: 'graph-permission'
  params: {
    principalId: identity.properties.principalId
  }
}

// User.Read.All, for the directory sync only: the least application permission that reads
// department, employeeOrgData and usageLocation (User.ReadBasic.All has none of them).
module directoryPermission 'modules/graph-permission.bicep' = if (grantGraphPermission && directorySync) {
  name: 'graph-permission-directory'
  params: {
    principalId: identity.properties.principalId
    appRole: 'User.Read.All'
  }
}

module alerts 'modules/alerts.bicep' = if (!empty(alertEmail)) {
  name: 'alerts'
  params: {
    location: location
    baseName: baseName
    appInsightsId: monitoring.outputs.appInsightsId
    healthUrl: 'https://${app.outputs.hostName}/api/health'
    alertEmail: alertEmail
    noRecordHours: noRecordAlertHours
    tags: tags
  }
}

output functionAppName string = app.outputs.name
output storageAccountName string = storage.outputs.name
output eventGridPartnerTopicName string = notificationDelivery == 'eventGrid' ? eventGridPartnerTopicName : ''
output eventGridDeadLetterContainer string = notificationDelivery == 'eventGrid' ? eventGridDeadLetterContainer : ''
output hostName string = app.outputs.hostName
output notificationUrl string = 'https://${app.outputs.hostName}/api/notifications'
output healthUrl string = 'https://${app.outputs.hostName}/api/health'
output identityPrincipalId string = identity.properties.principalId
output identityClientId string = identity.properties.clientId
