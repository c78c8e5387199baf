// API Management: the OAuth 2.1 front door and the gateway (DESIGN 6, FRONTDOOR.md). Everything it
// runs comes from apim-policies/, the same files the local gateway executes:
//   - named values from apim-policies/named-values.json: source "keyvault" as Key Vault references
//     to the secret of the same name (read with the user-assigned identity), source "deployment"
//     from deploymentValues;
//   - the APIs, operations, policies and fragments from apim-policies/apis.json, each policy file
//     deployed as rawxml.
// Bicep's loadTextContent takes only compile-time constant paths, so policyFiles below lists every
// policy file of the manifest explicitly, keyed by its manifest path. A manifest path missing from
// the map fails the deployment (policyFiles[path]); the repository's consistency check keeps the
// map and the manifest equal, so add a line here whenever apis.json names a new file.
param location string
param tags object
param apimName string
@allowed([
  'BasicV2'
  'StandardV2'
])
param sku string
param publisherEmail string
param publisherName string
param identityId string
param identityClientId string
param identityPrincipalId string
@description('Key Vault URI with its trailing slash.')
param keyVaultUri string
param applicationInsightsName string
param logAnalyticsId string
@description('The Function App\'s base URL (https://<host>), no trailing slash.')
param functionAppUrl string
@secure()
@description('Values of the named values whose source is "deployment" (FunctionKey is a secret).')
param deploymentValues object

var manifest = loadJsonContent('../../apim-policies/apis.json')
var namedValueDefs = loadJsonContent('../../apim-policies/named-values.json').namedValues

var policyFiles = {
  'global.xml': loadTextContent('../../apim-policies/global.xml')
  'fragments/oauth-error.xml': loadTextContent('../../apim-policies/fragments/oauth-error.xml')
  'fragments/error-page.xml': loadTextContent('../../apim-policies/fragments/error-page.xml')
  'fragments/internal-call.xml': loadTextContent('../../apim-policies/fragments/internal-call.xml')
  'fragments/authz-client-redirect.xml': loadTextContent('../../apim-policies/fragments/authz-client-redirect.xml')
  'fragments/authz-cookies.xml': loadTextContent('../../apim-policies/fragments/authz-cookies.xml')
  'fragments/authz-error-page.xml': loadTextContent('../../apim-policies/fragments/authz-error-page.xml')
  'fragments/authz-mac.xml': loadTextContent('../../apim-policies/fragments/authz-mac.xml')
  'fragments/authz-to-entra.xml': loadTextContent('../../apim-policies/fragments/authz-to-entra.xml')
  'oauth/api.xml': loadTextContent('../../apim-policies/oauth/api.xml')
  'oauth/metadata-prm.xml': loadTextContent('../../apim-policies/oauth/metadata-prm.xml')
  'oauth/metadata-as.xml': loadTextContent('../../apim-policies/oauth/metadata-as.xml')
  'oauth/jwks.xml': loadTextContent('../../apim-policies/oauth/jwks.xml')
  'oauth/register.xml': loadTextContent('../../apim-policies/oauth/register.xml')
  'oauth/authorize.xml': loadTextContent('../../apim-policies/oauth/authorize.xml')
  'oauth/consent-get.xml': loadTextContent('../../apim-policies/oauth/consent-get.xml')
  'oauth/consent-post.xml': loadTextContent('../../apim-policies/oauth/consent-post.xml')
  'oauth/callback.xml': loadTextContent('../../apim-policies/oauth/callback.xml')
  'oauth/token.xml': loadTextContent('../../apim-policies/oauth/token.xml')
  'oauth/revoke.xml': loadTextContent('../../apim-policies/oauth/revoke.xml')
  'oauth/preflight.xml': loadTextContent('../../apim-policies/oauth/preflight.xml')
  'mcp/api.xml': loadTextContent('../../apim-policies/mcp/api.xml')
}

// Manifest entries whose key starts with "$" are comments.
var fragments = filter(items(manifest.fragments), f => !startsWith(f.key, '$'))
var operations = flatten(map(manifest.apis, a => map(a.operations, o => {
  api: a.name
  name: o.name
  displayName: o.displayName
  method: o.method
  urlTemplate: o.urlTemplate
  policy: o.?policy ?? ''
})))
var operationsWithPolicy = filter(operations, o => !empty(o.policy))

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource apim 'Microsoft.ApiManagement/service@2024-05-01' = {
  name: apimName
  location: location
  tags: tags
  sku: {
    name: sku
    capacity: 1
  }
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    publisherEmail: publisherEmail
    publisherName: publisherName
    publicNetworkAccess: 'Enabled'
  }
}

// ---- Named values ----------------------------------------------------------------------------
// Key Vault named values are secret whatever the manifest's "secret" flag says (APIM stores them
// as secrets); the flag matters for the deployment ones.
resource namedValues 'Microsoft.ApiManagement/service/namedValues@2024-05-01' = [
  for nv in namedValueDefs: {
    parent: apim
    name: nv.name
    properties: nv.source == 'keyvault'
      ? {
          displayName: nv.name
          secret: true
          keyVault: {
            secretIdentifier: '${keyVaultUri}secrets/${nv.name}'
            identityClientId: identityClientId
          }
        }
      : {
          displayName: nv.name
          secret: nv.secret
          value: deploymentValues[nv.name]
        }
  }
]

// ---- Backend ---------------------------------------------------------------------------------
// The Function App as a backend entity, with the host key as its credential. The policies address
// the handler by URL ({{FunctionAppUrl}}, the APIs' serviceUrl) and add x-functions-key themselves,
// because the local gateway does not emulate backend-id; this entity is for operators (portal,
// health view) and for policies that may use backend-id later.
resource backend 'Microsoft.ApiManagement/service/backends@2024-05-01' = {
  parent: apim
  name: 'function-app'
  properties: {
    description: 'The MCP handler (Azure Functions custom handler)'
    protocol: 'http'
    url: functionAppUrl
    credentials: {
      header: {
        'x-functions-key': [
          '{{FunctionKey}}'
        ]
      }
    }
    tls: {
      validateCertificateChain: true
      validateCertificateName: true
    }
  }
  dependsOn: [
    namedValues
  ]
}

// ---- Policies --------------------------------------------------------------------------------
resource globalPolicy 'Microsoft.ApiManagement/service/policies@2024-05-01' = {
  parent: apim
  name: 'policy'
  properties: {
    format: 'rawxml'
    value: policyFiles[manifest.policy]
  }
  dependsOn: [
    namedValues
    policyFragments
  ]
}

resource policyFragments 'Microsoft.ApiManagement/service/policyFragments@2024-05-01' = [
  for f in fragments: {
    parent: apim
    name: f.key
    properties: {
      description: f.value
      format: 'rawxml'
      value: policyFiles[f.value]
    }
    dependsOn: [
      namedValues
    ]
  }
]

resource apis 'Microsoft.ApiManagement/service/apis@2024-05-01' = [
  for a in manifest.apis: {
    parent: apim
    name: a.name
    properties: {
      displayName: a.displayName
      path: a.path
      protocols: [
        'https'
      ]
      type: 'http'
      // The manifest writes the backend as {{FunctionAppUrl}} for the local gateway; APIM takes a
      // literal URL here.
      serviceUrl: replace(a.serviceUrl, '{{FunctionAppUrl}}', functionAppUrl)
      subscriptionRequired: a.subscriptionRequired
    }
  }
]

resource apiPolicies 'Microsoft.ApiManagement/service/apis/policies@2024-05-01' = [
  for (a, i) in manifest.apis: {
    parent: apis[i]
    name: 'policy'
    properties: {
      format: 'rawxml'
      value: policyFiles[a.policy]
    }
    dependsOn: [
      namedValues
      policyFragments
    ]
  }
]

resource apiOperations 'Microsoft.ApiManagement/service/apis/operations@2024-05-01' = [
  for o in operations: {
    #disable-next-line use-parent-property
    name: '${apim.name}/${o.api}/${o.name}'
    properties: {
      displayName: o.displayName
      method: o.method
      urlTemplate: o.urlTemplate
      templateParameters: []
    }
    dependsOn: [
      apis
    ]
  }
]

resource operationPolicies 'Microsoft.ApiManagement/service/apis/operations/policies@2024-05-01' = [
  for o in operationsWithPolicy: {
    #disable-next-line use-parent-property
    name: '${apim.name}/${o.api}/${o.name}/policy'
    properties: {
      format: 'rawxml'
      value: policyFiles[o.policy]
    }
    dependsOn: [
      apiOperations
      apiPolicies
      namedValues
      policyFragments
    ]
  }
]

// ---- Diagnostics -----------------------------------------------------------------------------
// Application Insights with local auth off: the logger authenticates with the user-assigned
// identity, which publishes metrics on the component.
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

resource metricsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, identityPrincipalId, monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource logger 'Microsoft.ApiManagement/service/loggers@2024-05-01' = {
  parent: apim
  name: 'appinsights'
  properties: {
    loggerType: 'applicationInsights'
    resourceId: applicationInsights.id
    credentials: {
      connectionString: applicationInsights.properties.ConnectionString
      identityClientId: identityClientId
    }
  }
  dependsOn: [
    metricsRole
  ]
}

// No tokens, codes or keys in telemetry (DESIGN 6, 9): no headers and no bodies are logged, and
// the query parameters the OAuth endpoints carry (/authorize, /consent, /oauth-callback; /token
// and /revoke take theirs in the body) and the Authorization and Location headers are masked
// wherever they would appear.
var oauthQueryParams = [
  'code'
  'state'
  'client_id'
  'redirect_uri'
  'code_challenge'
  'code_challenge_method'
  'code_verifier'
  'scope'
  'resource'
  'login_hint'
  'nonce'
  'txn'
  'session_state'
  'iss'
  'token'
  'refresh_token'
  'error_description'
]
var masking = {
  queryParams: map(oauthQueryParams, q => {
    value: q
    mode: 'Mask'
  })
  headers: [
    {
      value: 'Authorization'
      mode: 'Hide'
    }
    {
      value: 'Location'
      mode: 'Hide'
    }
    {
      value: 'Cookie'
      mode: 'Hide'
    }
    {
      value: 'Set-Cookie'
      mode: 'Hide'
    }
    {
      value: 'x-functions-key'
      mode: 'Hide'
    }
    {
      value: 'x-internal-key'
      mode: 'Hide'
    }
  ]
}
var messageSettings = {
  headers: []
  body: {
    bytes: 0
  }
  dataMasking: masking
}
var diagnosticProperties = {
  loggerId: logger.id
  alwaysLog: 'allErrors'
  logClientIp: false
  httpCorrelationProtocol: 'W3C'
  verbosity: 'information'
  sampling: {
    samplingType: 'fixed'
    percentage: 100
  }
  frontend: {
    request: messageSettings
    response: messageSettings
  }
  backend: {
    request: messageSettings
    response: messageSettings
  }
}

resource diagnostics 'Microsoft.ApiManagement/service/diagnostics@2024-05-01' = {
  parent: apim
  name: 'applicationinsights'
  properties: diagnosticProperties
}

// The OAuth API again at API scope, so its masking holds even if the global diagnostic is changed.
resource oauthDiagnostics 'Microsoft.ApiManagement/service/apis/diagnostics@2024-05-01' = [
  for (a, i) in manifest.apis: if (a.name == 'oauth') {
    parent: apis[i]
    name: 'applicationinsights'
    properties: diagnosticProperties
  }
]

// Azure Monitor gets the service's metrics only: its gateway logs record request URLs with their
// query strings, which the diagnostics above mask but resource logs would not.
resource apimMetrics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: apim
  properties: {
    workspaceId: logAnalyticsId
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output name string = apim.name
output gatewayUrl string = apim.properties.gatewayUrl
