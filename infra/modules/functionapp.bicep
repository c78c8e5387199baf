// The Function App: Flex Consumption (FC1, Linux), runtime "custom" (the Go custom handler staged
// into dist/ by scripts/stage), integrated into the VNet so it reaches storage through the private
// endpoints, with identity-based AzureWebJobsStorage__* settings and a deployment container
// authenticated by the user-assigned identity. Role assignments give that identity what the host and
// the handler need and no more. A dedicated host key ("apim") is created with a value from the azd
// environment: host keys cannot be listed before the Functions host has first run (DESIGN 9).
param location string
param tags object
param functionAppName string
param planName string
@description('azd service name (azure.yaml services.<name>): azd finds the app by the azd-service-name tag.')
param serviceName string
param identityId string
param identityClientId string
param identityPrincipalId string
param storageAccountName string
param deploymentContainerName string
param applicationInsightsName string
param logAnalyticsId string
param subnetId string
param instanceMemoryMB int
param maximumInstanceCount int
param runtimeVersion string
@description('The gateway origin, no trailing slash: the token issuer, and the base of the resource URL.')
param gatewayUrl string
@description('The public JWKS (not a secret): MCP_TOKEN_JWKS.')
param tokenJwks string
@description('Versionless Key Vault URI of the InternalKey secret.')
param internalKeySecretUri string
@secure()
param functionKey string
param logLevel string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Built-in roles.
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

// Blob: the Functions host documents Storage Blob Data Owner for an identity-based
// AzureWebJobsStorage (host keys, leases, the deployment package); the handler needs data
// read/write on its containers, which that covers. Queue: the handler's task queues and the SSE
// backplane (create, send, receive, delete). Metrics: Application Insights with local auth off.
resource blobRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identityPrincipalId, storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource queueRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identityPrincipalId, storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource metricsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, identityPrincipalId, monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true // Linux
  }
}

// Every setting the handler reads (handler/config, handler/storage), plus the host's own.
// Not set on purpose: FUNCTIONS_CUSTOMHANDLER_PORT and WEBSITE_HOSTNAME (set by the platform),
// MCP_LISTEN_HOST (the default, loopback, is what the host proxies to), MCP_AUTH (never off in
// Azure), AzureWebJobsStorage and AzureWebJobsStorage__accountName (the service URIs below say it).
var appSettings = {
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  MCP_RESOURCE_URL: '${gatewayUrl}/mcp'
  MCP_TOKEN_ISSUER: gatewayUrl
  MCP_TOKEN_JWKS: tokenJwks
  // A Key Vault reference, resolved with the identity of keyVaultReferenceIdentity below.
  MCP_INTERNAL_KEY: '@Microsoft.KeyVault(SecretUri=${internalKeySecretUri})'
  MCP_FAMILY_CHECK_SECONDS: '5'
  MCP_LOG_LEVEL: logLevel
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
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
    // Public: API Management v2 (BasicV2) calls it over the internet; every function needs a key
    // (authLevel function) and the handler validates the MCP token again.
    publicNetworkAccess: 'Enabled'
    virtualNetworkSubnetId: subnetId
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      appSettings: map(items(appSettings), setting => {
        name: setting.key
        value: setting.value
      })
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'custom'
        version: runtimeVersion
      }
    }
  }
  dependsOn: [
    // The host starts with its identity already able to reach storage and Application Insights.
    blobRole
    queueRole
    metricsRole
  ]
}

// No publishing with basic credentials (azd deploys with Entra ID).
resource ftpPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

// The dedicated host key API Management sends as x-functions-key (named value FunctionKey).
resource host 'Microsoft.Web/sites/host@2024-04-01' existing = {
  parent: site
  name: 'default'
}

resource apimKey 'Microsoft.Web/sites/host/functionKeys@2024-04-01' = {
  parent: host
  name: 'apim'
  properties: {
    name: 'apim'
    value: functionKey
  }
}

resource siteDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: site
  properties: {
    workspaceId: logAnalyticsId
    logs: [
      {
        category: 'FunctionAppLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output name string = site.name
output url string = 'https://${site.properties.defaultHostName}'
