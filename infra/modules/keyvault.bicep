// Key Vault in RBAC mode holding the front door's keys (FRONTDOOR.md "Keys"). The values come from
// the azd environment (generated once by infra/hooks/preprovision.* with scripts/keygen), so every
// `azd up` writes the same values and nobody is signed out. API Management reads every secret
// (named values of source "keyvault" reference them); the Function App reads InternalKey alone
// (its MCP_INTERNAL_KEY app setting is a Key Vault reference). Soft delete is on and purge
// protection off, so `azd down --purge` can remove the vault.
param location string
param tags object
param keyVaultName string

@secure()
@description('The key set of scripts/keygen: an object with the seven names below.')
param keySet object

param functionPrincipalId string
param apimPrincipalId string

// The secret names are the named values' names (apim-policies/named-values.json, source "keyvault").
var secretNames = [
  'TokenSigningKey'
  'TokenSigningKid'
  'TokenJwks'
  'TokenJwkN'
  'TokenJwkE'
  'BrowserKey'
  'InternalKey'
]

var keyVaultSecretsUser = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    // API Management v2 (BasicV2) has no virtual network integration, so it reaches the vault
    // over its public endpoint; access is by RBAC only.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource secrets 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [
  for name in secretNames: {
    parent: vault
    name: name
    properties: {
      value: keySet[name]
      contentType: 'text/plain'
    }
  }
]

// API Management: every secret (vault scope).
resource apimSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, apimPrincipalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: keyVaultSecretsUser
    principalId: apimPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The Function App: InternalKey only (secret scope). It never sees the signing or browser keys.
resource internalKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: 'InternalKey'
}

resource functionInternalKeyUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, 'InternalKey', functionPrincipalId, keyVaultSecretsUser)
  scope: internalKeySecret
  properties: {
    roleDefinitionId: keyVaultSecretsUser
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
  dependsOn: [
    secrets
  ]
}

output name string = vault.name
// Ends with a slash: https://<name>.vault.azure.net/
output uri string = vault.properties.vaultUri
// Versionless, so the app setting follows the latest version.
output internalKeySecretUri string = '${vault.properties.vaultUri}secrets/InternalKey'
