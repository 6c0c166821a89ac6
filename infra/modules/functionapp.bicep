// The Flex Consumption (FC1) Linux function app running the custom handler: user-assigned identity
// only, identity-based AzureWebJobsStorage, HTTPS only, TLS 1.2, FTP off, and every app setting of
// DESIGN.md section 3.3. Optionally App Service Authentication in front of the read API.

@description('Azure region.')
param location string

@description('Function app name (globally unique host name).')
param name string

@description('Resource id of the user-assigned managed identity.')
param identityId string

@description('Client id of the user-assigned managed identity.')
param identityClientId string

@description('Blob endpoint of the storage account (identity-based AzureWebJobsStorage; the host keeps its state there).')
param blobEndpoint string

@description('Queue endpoint of the storage account.')
param queueEndpoint string

@description('Table endpoint of the storage account.')
param tableEndpoint string

@description('Deployment container of the Flex Consumption package.')
param deploymentContainerName string

@description('Application Insights connection string (not a secret: local auth is off).')
param appInsightsConnectionString string

@description('Most instances the app may scale out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int

@description('Memory per instance (MB): 512, 2048 or 4096.')
@allowed([512, 2048, 4096])
param instanceMemoryMB int

@description('Secret Graph echoes in every notification (at most 128 characters).')
@secure()
param notificationClientState string

@description('Days stored rows are kept.')
param retentionDays int

@description('Microsoft Graph endpoint (other clouds: https://graph.microsoft.us, https://dod-graph.microsoft.us).')
param graphBaseUrl string

@description('Entra ID authority (other clouds: https://login.microsoftonline.us).')
param graphAuthorityHost string

@description('Put App Service Authentication (Entra ID) in front of the app; webhooks stay anonymous.')
param enableReadApiAuth bool

@description('Client (application) id of the app registration that protects the read API; required when enableReadApiAuth.')
param readApiAppId string

@description('App role a caller of the read API must hold when enableReadApiAuth.')
param readApiRequiredRole string

@description('DIRECTORY_SYNC: the SyncDirectory timer and the Department and CostCenter columns.')
param directorySync bool

@description('NOTIFICATION_DELIVERY: webhook or eventGrid.')
param notificationDelivery string

@description('EVENT_GRID_PARTNER_TOPIC (with eventGrid).')
param eventGridPartnerTopicName string

param tags object = {}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${name}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
  }
}

// Basic publishing credentials (FTP and SCM with a password) off: deployment uses Entra ID.
resource ftp 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scm 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

var hostName = site.properties.defaultHostName
// environment().authentication.loginEndpoint ends in '/'; the issuer must not get a double slash.
var authority = endsWith(graphAuthorityHost, '/') ? substring(graphAuthorityHost, 0, length(graphAuthorityHost) - 1) : graphAuthorityHost

// Settings that name the app's own host name are set once the site exists.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: {
    // Service URIs rather than the account name, so sovereign clouds' endpoints are used as given.
    AzureWebJobsStorage__blobServiceUri: blobEndpoint
    AzureWebJobsStorage__queueServiceUri: queueEndpoint
    AzureWebJobsStorage__tableServiceUri: tableEndpoint
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
    GRAPH_TENANT_ID: tenant().tenantId
    GRAPH_AUTH: 'managed-identity'
    AZURE_CLIENT_ID: identityClientId
    GRAPH_BASE_URL: graphBaseUrl
    GRAPH_AUTHORITY_HOST: authority
    // The app's defaults, written out so that an admin sees and can tune them in the portal.
    GRAPH_MAX_RETRIES: '4'
    GRAPH_MAX_RETRY_ELAPSED_SECONDS: '60'
    GRAPH_REQUEST_TIMEOUT_SECONDS: '30'
    GRAPH_MAX_INLINE_RETRY_AFTER_SECONDS: '30'
    // Graph's call-record limit per app and tenant (1,500 requests / 20 s) is shared by every
    // instance: each keeps to its share of 1,400 (35 at 40 instances; the sweep's listing counts
    // against its own instance's share), leaving 100 of margin. docs/ADMIN.md#large-tenants has the arithmetic.
    GRAPH_CALL_RECORD_REQUESTS_PER_20_SECONDS: string(max(1, 1400 / maximumInstanceCount))
    CALLRECORD_WRITE_LEASE_SECONDS: '300'
    STORAGE_REQUEST_TIMEOUT_SECONDS: '30'
    FETCH_NOT_FOUND_HORIZON_HOURS: '8'
    FETCH_FAILURE_HORIZON_HOURS: '72'
    // Named by handlers/PullReports/function.json (%REPORTS_SCHEDULE%): the host cannot index the
    // function without it.
    REPORTS_SCHEDULE: '0 */15 * * * *'
    REPORTS_BACKFILL_DAYS: '30'
    REPORTS_LOOKBACK_HOURS: '3'
    REPORTS_DEEP_LOOKBACK_HOURS: '96'
    REPORTS_DEEP_EVERY_HOURS: '24'
    REPORTS_LEASE_SECONDS: '300'
    // Named by handlers/MaintainSubscription and handlers/Reconcile (%…%), like REPORTS_SCHEDULE.
    SUBSCRIPTION_SCHEDULE: '0 0 */2 * * *'
    RECONCILE_SCHEDULE: '0 2-59/5 * * * *'
    RECONCILE_PASS_HOURS: '3,26'
    RECONCILE_BUDGET_SECONDS: '240'
    PURGE_SCHEDULE: '0 15 3 * * *'
    // Named by handlers/SyncDirectory (%DIRECTORY_SYNC_SCHEDULE%); the timer does nothing while
    // DIRECTORY_SYNC is false.
    DIRECTORY_SYNC: directorySync ? 'true' : 'false'
    DIRECTORY_SYNC_SCHEDULE: '0 7 * * * *'
    // With eventGrid, Graph subscribes with EventGrid:?azuresubscriptionid=…&resourcegroup=…&
    // partnertopic=…&location=… (this subscription, resource group and region) and the webhooks
    // answer 404; the two URLs below are then unused.
    NOTIFICATION_DELIVERY: notificationDelivery
    EVENT_GRID_SUBSCRIPTION_ID: notificationDelivery == 'eventGrid' ? subscription().subscriptionId : ''
    EVENT_GRID_RESOURCE_GROUP: notificationDelivery == 'eventGrid' ? resourceGroup().name : ''
    EVENT_GRID_PARTNER_TOPIC: notificationDelivery == 'eventGrid' ? eventGridPartnerTopicName : ''
    EVENT_GRID_LOCATION: notificationDelivery == 'eventGrid' ? location : ''
    NOTIFICATION_URL: 'https://${hostName}/api/notifications'
    LIFECYCLE_NOTIFICATION_URL: 'https://${hostName}/api/lifecycle'
    NOTIFICATION_CLIENT_STATE: notificationClientState
    RETENTION_DAYS: string(retentionDays)
    READ_API_REQUIRED_ROLE: enableReadApiAuth ? readApiRequiredRole : ''
    FEED_SETTLE_SECONDS: '300'
    CONSUMER_STALE_DAYS: '3'
  }
}

// Entra ID in front of the app, without forcing it: Graph cannot sign in, so the webhooks stay
// anonymous (they check clientState). App Service validates the tokens that are sent and passes the
// caller's claims on (X-MS-CLIENT-PRINCIPAL); refusing callers without READ_API_REQUIRED_ROLE is the
// read API's job (src/api).
resource auth 'Microsoft.Web/sites/config@2024-04-01' = if (enableReadApiAuth) {
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: false
      unauthenticatedClientAction: 'AllowAnonymous'
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: readApiAppId
          openIdIssuer: '${authority}/${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${readApiAppId}'
            readApiAppId
          ]
          defaultAuthorizationPolicy: {
            allowedPrincipals: {}
          }
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

output name string = site.name
output hostName string = hostName
