// The Graph application permission CallRecords.Read.All for the app's identity, granted with the
// Microsoft Graph Bicep extension: no app registration and no client secret exist anywhere.
// Deployed only when the deployer may grant application permissions (see main.bicep).

extension microsoftGraphV1

@description('Principal (object) id of the managed identity\'s service principal.')
param principalId string

@description('The application permission to grant.')
param appRole string = 'CallRecords.Read.All'

// Microsoft Graph's well-known application id, the same in every tenant.
resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: '00000003-0000-0000-c000-000000000000'
}

resource grant 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  appRoleId: filter(graph.appRoles, role => role.value == appRole)[0].id
  principalId: principalId
  resourceId: graph.id
}
