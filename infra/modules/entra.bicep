// The Entra application API Management signs users in with (DESIGN 1, FRONTDOOR "Who does what"):
// a confidential web client with no secret. Its credential is a federated identity credential that
// trusts API Management's user-assigned managed identity, so the gateway redeems Entra's code with a
// managed-identity assertion (apim-policies/oauth/callback.xml). The application lives in the
// tenant, not in the resource group: `azd down --purge` leaves it, infra/hooks/postdown.* deletes it.
//
// Deploying it needs Microsoft Graph permission Application.ReadWrite.All (a user) or
// Application.ReadWrite.OwnedBy (a service principal, e.g. the one `azd pipeline config` creates).
extension microsoftGraphV1

@description('Stable client-provided key of the application (Graph uniqueName).')
param uniqueName string
param displayName string
@description('The gateway origin; the redirect URI is <gateway>/oauth-callback.')
param gatewayUrl string
@description('Users of other tenants may sign in (signInAudience AzureADMultipleOrgs); the gateway still checks the tenant allow-list.')
param multiTenant bool
@description('Only users and groups assigned to the enterprise application may sign in.')
param requireUserAssignment bool
@description('Object id to add as an owner (the deploying principal); empty for none.')
param ownerId string
@description('Issuer of the managed identity tokens: https://login.microsoftonline.com/<tenant>/v2.0.')
param federatedIssuer string
@description('Principal (object) id of API Management\'s user-assigned identity: the federated credential\'s subject.')
param apimPrincipalId string

// Microsoft Graph delegated scopes of the sign-in (the gateway asks for "openid profile").
var graphAppId = '00000003-0000-0000-c000-000000000000'
var openidScope = '37f7f235-527c-4136-accd-4a02d197296e'
var profileScope = '14dad69e-099b-42c9-810b-d002981feec1'

resource app 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  signInAudience: multiTenant ? 'AzureADMultipleOrgs' : 'AzureADMyOrg'
  web: {
    redirectUris: [
      '${gatewayUrl}/oauth-callback'
    ]
    implicitGrantSettings: {
      enableAccessTokenIssuance: false
      enableIdTokenIssuance: false
    }
  }
  requiredResourceAccess: [
    {
      resourceAppId: graphAppId
      resourceAccess: [
        {
          id: openidScope
          type: 'Scope'
        }
        {
          id: profileScope
          type: 'Scope'
        }
      ]
    }
  ]
  owners: {
    relationships: empty(ownerId) ? [] : [
      ownerId
    ]
  }

  resource apimCredential 'federatedIdentityCredentials@v1.0' = {
    name: '${app.uniqueName}/apim-managed-identity'
    description: 'API Management\'s user-assigned managed identity (client assertion at /oauth-callback)'
    issuer: federatedIssuer
    subject: apimPrincipalId
    audiences: [
      'api://AzureADTokenExchange'
    ]
  }
}

// The enterprise application (service principal) in the home tenant: it carries the
// "assignment required" switch.
resource servicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: app.appId
  appRoleAssignmentRequired: requireUserAssignment
}

output clientId string = app.appId
output objectId string = app.id
output uniqueName string = app.uniqueName
output servicePrincipalId string = servicePrincipal.id
