// The storage account: shared-key access off (identity-based access only), TLS 1.2, HTTPS only, no
// public blob access; the app's queues and tables; the Flex Consumption deployment container; and the
// data-plane roles the app's managed identity needs, scoped to this account only.

@description('Azure region.')
param location string

@description('Storage account name (3-24 lower-case letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Principal id of the app\'s user-assigned managed identity.')
param appPrincipalId string

@description('Blob container the Flex Consumption plan deploys the package from.')
param deploymentContainerName string

@description('Replication. Geo-redundant by default: this is the customer\'s only copy of its call data.')
@allowed(['Standard_GRS', 'Standard_RAGRS', 'Standard_GZRS', 'Standard_RAGZRS', 'Standard_ZRS', 'Standard_LRS'])
param skuName string = 'Standard_GRS'

@description('Blob container Event Grid dead-letters undeliverable events into; empty: none (webhook delivery).')
param deadLetterContainerName string = ''

param tags object = {}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      services: {
        blob: { enabled: true, keyType: 'Account' }
        file: { enabled: true, keyType: 'Account' }
        queue: { enabled: true, keyType: 'Account' }
        table: { enabled: true, keyType: 'Account' }
      }
    }
  }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Events Event Grid could not write into the queue (Event Grid delivery only).
resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = if (!empty(deadLetterContainerName)) {
  parent: blobs
  name: empty(deadLetterContainerName) ? 'unused' : deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

// The webhook's queue, and the poison queue the Functions host moves messages to after 5 dequeues.
resource queue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for q in ['callrecord-ids', 'callrecord-ids-poison']: {
  parent: queues
  name: q
}]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

// The tables of DESIGN.md section 3.4 (the app also creates them when missing).
resource table 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for t in ['CallRecords', 'CallRecordSessions', 'CallRecordBodies', 'PstnCalls', 'DirectRoutingCalls', 'AppState', 'Feed', 'Users']: {
  parent: tableService
  name: t
}]

// Data-plane roles for the app's identity: the host keeps its leases and the deployment package in
// blobs (Blob Data Owner); the app sends and the queue trigger receives and deletes messages (Queue
// Data Contributor, Queue Data Message Processor); the app reads and writes tables.
var roles = {
  blobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  queueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  queueDataMessageProcessor: '8a0f0c08-91a1-4084-bc3d-661d67233fed'
  tableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
}

resource roleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in items(roles): {
  name: guid(account.id, appPrincipalId, role.value)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.value)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
