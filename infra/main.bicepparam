// Example parameters: `az deployment group create -g rg-teams-cdr -f infra/main.bicep -p infra/main.bicepparam`
using './main.bicep'

param baseName = 'teamscdr'
param retentionDays = 90
// Leave true if you (the deployer) may grant Graph application permissions; otherwise set false and
// let an Entra admin run the one command in the README.
param grantGraphPermission = true
// On a redeployment, pass the current client state so the running Graph subscription stays valid:
// param notificationClientState = readEnvironmentVariable('NOTIFICATION_CLIENT_STATE')
