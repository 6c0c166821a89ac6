// Event Grid delivery, the second step (scripts/event-grid-connect.sh deploys it once Graph has
// created the partner topic and it is activated): the topic's event subscription that writes
// Graph's call-record and reauthorization events, as CloudEvents 1.0, into the app's call-record
// queue with the topic's system-assigned identity, dead-lettering what it cannot deliver into a
// blob container; and the two data-plane roles that identity needs, each scoped to its one target.

@description('The partner topic Graph created (the deployment output eventGridPartnerTopicName).')
param partnerTopicName string

@description('The app\'s storage account (the deployment output storageAccountName).')
param storageAccountName string

@description('The dead-letter container (the deployment output eventGridDeadLetterContainer).')
param deadLetterContainerName string = 'event-grid-dead-letter'

@description('The queue FetchCallRecord reads.')
param queueName string = 'callrecord-ids'

resource topic 'Microsoft.EventGrid/partnerTopics@2025-02-15' existing = {
  name: partnerTopicName
}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource queue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: queueName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource deadLetter 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deadLetterContainerName
}

// Storage Queue Data Message Sender: write messages, on the one queue; nothing else.
resource sender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(queue.id, topic.id, 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a')
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a')
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Blob Data Contributor: write dead-lettered events, on the one container.
resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetter.id, topic.id, 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
  scope: deadLetter
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource toQueue 'Microsoft.EventGrid/partnerTopics/eventSubscriptions@2025-02-15' = {
  parent: topic
  name: 'to-callrecord-queue'
  dependsOn: [sender, deadLetterWriter]
  properties: {
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    filter: {
      includedEventTypes: [
        'Microsoft.Graph.CallRecordCreated'
        'Microsoft.Graph.CallRecordUpdated'
        'Microsoft.Graph.SubscriptionReauthorizationRequired'
      ]
    }
    deliveryWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      destination: {
        endpointType: 'StorageQueue'
        properties: {
          resourceId: account.id
          queueName: queueName
          // The queue's own limit would drop an event nobody read for 7 days; the app reads it
          // within seconds, and a message must never expire unread.
          queueMessageTimeToLiveInSeconds: -1
        }
      }
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: account.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}

output eventSubscriptionId string = toQueue.id
