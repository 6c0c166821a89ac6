// Optional alerting (main.bicep deploys it when `alertEmail` is set): an action group that mails the
// admin, and two alerts on the app's own signals:
// - the health check stays failing: a standard availability test calls the anonymous
//   /api/health every 5 minutes from three regions (the app answers 503 when failing), and a metric
//   alert fires when two regions fail within 15 minutes;
// - no call record was stored for `noRecordHours`: a log alert counts the fetch's
//   "call record stored" lines in Application Insights.
// Not verified against Azure (nothing here reaches it); see README "Deploying".

@description('Azure region of the availability test and the log alert.')
param location string

@description('Name prefix for the resources.')
param baseName string

@description('Resource id of the Application Insights component the app logs to.')
param appInsightsId string

@description('The anonymous health URL (https://{host}/api/health).')
param healthUrl string

@description('E-mail address the alerts go to.')
param alertEmail string

@description('Hours without a stored call record after which the second alert fires.')
@minValue(1)
@maxValue(48)
param noRecordHours int = 6

param tags object = {}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-${baseName}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: take('cdr${baseName}', 12)
    enabled: true
    emailReceivers: [
      {
        name: 'admin'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

resource healthTest 'Microsoft.Insights/webtests@2022-06-15' = {
  name: 'health-${baseName}'
  location: location
  // Availability tests are tied to their component by this tag.
  tags: union(tags, {
    'hidden-link:${appInsightsId}': 'Resource'
  })
  kind: 'standard'
  properties: {
    SyntheticMonitorId: 'health-${baseName}'
    Name: 'Teams CDR health'
    Description: 'GET /api/health: 200 while ok or degraded, 503 when failing.'
    Enabled: true
    Frequency: 300
    Timeout: 30
    Kind: 'standard'
    RetryEnabled: true
    Locations: [
      { Id: 'emea-nl-ams-azr' }
      { Id: 'us-va-ash-azr' }
      { Id: 'apac-sg-sin-azr' }
    ]
    Request: {
      RequestUrl: healthUrl
      HttpVerb: 'GET'
      ParseDependentRequests: false
    }
    ValidationRules: {
      ExpectedHttpStatusCode: 200
      SSLCheck: true
      SSLCertRemainingLifetimeCheck: 7
    }
  }
}

resource healthFailing 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'health-failing-${baseName}'
  location: 'global'
  tags: tags
  properties: {
    description: 'Teams CDR Functions: the health check keeps failing (calls are being lost or will be). GET /api/health/details with a function key says why.'
    severity: 1
    enabled: true
    scopes: [
      healthTest.id
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.WebtestLocationAvailabilityCriteria'
      webTestId: healthTest.id
      componentId: appInsightsId
      failedLocationCount: 2
    }
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}

resource noRecords 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'no-records-${baseName}'
  location: location
  tags: tags
  properties: {
    displayName: 'Teams CDR Functions: no call record stored for ${noRecordHours} hours'
    description: 'No call record was stored for ${noRecordHours} hours: check the health details, the subscription and the Graph permission.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT1H'
    // Log alerts accept windows of PT1M to PT6H, P1D and P2D only: the query narrows the window to
    // the hours asked for.
    windowSize: noRecordHours <= 6 ? 'PT${noRecordHours}H' : (noRecordHours <= 24 ? 'P1D' : 'P2D')
    criteria: {
      allOf: [
        {
          query: 'traces | where timestamp > ago(${noRecordHours}h) | where message has "call record stored"'
          timeAggregation: 'Count'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}
