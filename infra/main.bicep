// The whole system of DESIGN section 1, for `azd up`:
//   MCP client -> API Management (OAuth 2.1 front door, apim-policies/) -> Function App (Flex
//   Consumption, Go custom handler, VNet-integrated) -> Storage (Blob + Queue, private endpoints only).
// Key Vault holds the front door's keys (FRONTDOOR.md "Keys"), which infra/hooks/preprovision.*
// generates once into the azd environment (MCP_FRONTDOOR_KEYS) and keeps; the Entra application
// (Microsoft Graph extension) lives in the tenant and is removed by infra/hooks/postdown.*.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; names and tags every resource.')
param environmentName string

@minLength(1)
@description('Azure region of every resource (it must offer Flex Consumption and API Management v2).')
param location string

@description('Object id of the deploying user or service principal (AZURE_PRINCIPAL_ID); made an owner of the Entra application so that it can delete it. Empty: no owner added.')
param principalId string = ''

@secure()
@description('The front door keys (FRONTDOOR.md "Keys"): base64 of the JSON object scripts/keygen writes (TokenSigningKey, TokenSigningKid, TokenJwks, TokenJwkN, TokenJwkE, BrowserKey, InternalKey). The preprovision hook fills MCP_FRONTDOOR_KEYS; base64 keeps the JSON intact through azd\'s parameter substitution.')
param frontDoorKeys string

@secure()
@minLength(32)
@description('Value of the dedicated host function key ("apim") the gateway sends as x-functions-key. The preprovision hook generates MCP_FUNCTION_KEY once and keeps it, so re-provisioning does not rotate it.')
param functionKey string

@description('Comma-separated tenant ids whose users may sign in. Empty: the deploying tenant only. Any other tenant makes the Entra application multi-tenant (signInAudience AzureADMultipleOrgs).')
param allowedTenants string = ''

@description('Only users and groups assigned to the Entra application (its enterprise application) may sign in.')
param requireUserAssignment bool = false

@allowed([
  'BasicV2'
  'StandardV2'
])
@description('API Management v2 tier (both have the built-in cache the front door uses).')
param apimSku string = 'BasicV2'

@description('API Management publisher e-mail (required by the service; receives service notifications).')
param apimPublisherEmail string = 'mcp-admin@example.com'

@description('API Management publisher name.')
param apimPublisherName string = 'MCP server'

@allowed([
  512
  2048
  4096
])
@description('Flex Consumption instance memory (MB).')
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(1000)
@description('Flex Consumption maximum instance count.')
param maximumInstanceCount int = 100

@description('Flex Consumption runtime version of the "custom" (custom handler) stack. Check `az functionapp list-flexconsumption-runtimes --location <region> --runtime custom` if the deployment rejects it.')
param functionRuntimeVersion string = '1.0'

@allowed([
  'info'
  'debug'
])
@description('MCP_LOG_LEVEL of the handler.')
param logLevel string = 'info'

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

// Names. The gateway's origin is known from its name, which breaks the cycle between the
// Function App (MCP_RESOURCE_URL, MCP_TOKEN_ISSUER) and API Management (FunctionAppUrl).
var apimName = '${abbrs.apiManagementService}${resourceToken}'
var gatewayUrl = 'https://${apimName}.azure-api.net'
var functionAppName = '${abbrs.webSitesFunctions}${resourceToken}'
var storageAccountName = '${abbrs.storageStorageAccounts}${resourceToken}'
var deploymentContainerName = 'app-package-${resourceToken}'
var keyVaultName = '${abbrs.keyVaultVaults}${resourceToken}'

// The keys, decoded once; the secrets are written from here and never leave Key Vault again,
// except the public JWKS, which the handler gets as plain configuration.
var keySet = json(base64ToString(frontDoorKeys))

// Tenants.
var tenantId = tenant().tenantId
var listedTenants = filter(map(split(allowedTenants, ','), t => toLower(trim(t))), t => !empty(t))
var tenantList = empty(listedTenants) ? [tenantId] : listedTenants
var multiTenant = length(filter(tenantList, t => t != toLower(tenantId))) > 0
var loginEndpoint = environment().authentication.loginEndpoint // https://login.microsoftonline.com/
var entraAuthority = '${loginEndpoint}${multiTenant ? 'organizations' : tenantId}/oauth2/v2.0'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    location: location
    tags: tags
    functionIdentityName: '${abbrs.managedIdentityUserAssignedIdentities}func-${resourceToken}'
    apimIdentityName: '${abbrs.managedIdentityUserAssignedIdentities}apim-${resourceToken}'
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    location: location
    tags: tags
    storageAccountName: storageAccountName
    deploymentContainerName: deploymentContainerName
  }
}

module network 'modules/network.bicep' = {
  name: 'network'
  scope: rg
  params: {
    location: location
    tags: tags
    virtualNetworkName: '${abbrs.networkVirtualNetworks}${resourceToken}'
    privateEndpointPrefix: '${abbrs.networkPrivateEndpoints}${resourceToken}'
    storageAccountId: storage.outputs.id
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    location: location
    tags: tags
    keyVaultName: keyVaultName
    keySet: keySet
    functionPrincipalId: identity.outputs.functionPrincipalId
    apimPrincipalId: identity.outputs.apimPrincipalId
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    location: location
    tags: tags
    functionAppName: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    serviceName: 'mcp'
    identityId: identity.outputs.functionIdentityId
    identityClientId: identity.outputs.functionClientId
    identityPrincipalId: identity.outputs.functionPrincipalId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    logAnalyticsId: monitoring.outputs.logAnalyticsId
    subnetId: network.outputs.functionSubnetId
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    runtimeVersion: functionRuntimeVersion
    gatewayUrl: gatewayUrl
    tokenJwks: keySet.TokenJwks
    internalKeySecretUri: keyVault.outputs.internalKeySecretUri
    functionKey: functionKey
    logLevel: logLevel
  }
}

module entra 'modules/entra.bicep' = {
  name: 'entra'
  scope: rg
  params: {
    uniqueName: 'mcp-frontdoor-${environmentName}-${resourceToken}'
    displayName: 'MCP server front door (${environmentName})'
    gatewayUrl: gatewayUrl
    multiTenant: multiTenant
    requireUserAssignment: requireUserAssignment
    ownerId: principalId
    federatedIssuer: '${loginEndpoint}${tenantId}/v2.0'
    apimPrincipalId: identity.outputs.apimPrincipalId
  }
}

module apim 'modules/apim.bicep' = {
  name: 'apim'
  scope: rg
  params: {
    location: location
    tags: tags
    apimName: apimName
    sku: apimSku
    publisherEmail: apimPublisherEmail
    publisherName: apimPublisherName
    identityId: identity.outputs.apimIdentityId
    identityClientId: identity.outputs.apimClientId
    identityPrincipalId: identity.outputs.apimPrincipalId
    keyVaultUri: keyVault.outputs.uri
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    logAnalyticsId: monitoring.outputs.logAnalyticsId
    functionAppUrl: functionApp.outputs.url
    // Every named value of apim-policies/named-values.json whose source is "deployment".
    deploymentValues: {
      GatewayUrl: gatewayUrl
      FunctionAppUrl: functionApp.outputs.url
      FunctionKey: functionKey
      EntraAuthorizeUrl: '${entraAuthority}/authorize'
      EntraTokenUrl: '${entraAuthority}/token'
      EntraClientId: entra.outputs.clientId
      EntraIssuerPrefix: loginEndpoint
      EntraAllowedTenants: join(tenantList, ',')
      ManagedIdentityClientId: identity.outputs.apimClientId
    }
  }
  // functionApp.outputs makes this wait for the whole Function App module, host key included.
}

// azd shows these after `azd up` and keeps them in the environment (.azure/<env>/.env).
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output MCP_GATEWAY_URL string = gatewayUrl
output MCP_ENDPOINT string = '${gatewayUrl}/mcp'
output MCP_SSE_ENDPOINT string = '${gatewayUrl}/mcp/sse'
output MCP_METADATA_URL string = '${gatewayUrl}/.well-known/oauth-protected-resource/mcp'
output MCP_AUTHORIZATION_SERVER_METADATA_URL string = '${gatewayUrl}/.well-known/oauth-authorization-server'
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_URL string = functionApp.outputs.url
output AZURE_APIM_NAME string = apim.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
// Read by infra/hooks/postdown.* to delete the Entra application.
output ENTRA_APP_CLIENT_ID string = entra.outputs.clientId
output ENTRA_APP_OBJECT_ID string = entra.outputs.objectId
output ENTRA_APP_UNIQUE_NAME string = entra.outputs.uniqueName
