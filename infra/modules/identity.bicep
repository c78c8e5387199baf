// User-assigned managed identities: one for the Function App (storage, metrics, its Key Vault
// reference), one for API Management (Key Vault named values, App Insights logger, and the
// federated credential of the Entra application that replaces a client secret).
param location string
param tags object
param functionIdentityName string
param apimIdentityName string

resource functionIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: functionIdentityName
  location: location
  tags: tags
}

resource apimIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: apimIdentityName
  location: location
  tags: tags
}

output functionIdentityId string = functionIdentity.id
output functionClientId string = functionIdentity.properties.clientId
output functionPrincipalId string = functionIdentity.properties.principalId
output apimIdentityId string = apimIdentity.id
output apimClientId string = apimIdentity.properties.clientId
output apimPrincipalId string = apimIdentity.properties.principalId
