// The storage account: reachable only through the private endpoints of network.bicep (public
// network access off), identity-based access only (shared key off), TLS 1.2, no public blobs.
// Containers the handler uses from its first request ("snippets", "oauth"; it also creates them
// at start) and the Flex Consumption deployment container. Task queues and the SSE backplane queue
// are created by the handler at run time. A lifecycle management policy deletes expired OAuth
// records, which the handler never deletes itself.
param location string
param tags object
param storageAccountName string
param deploymentContainerName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Disabled'
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'None'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for name in [deploymentContainerName, 'snippets', 'oauth']: {
    parent: blobService
    name: name
    properties: {
      publicAccess: 'None'
    }
  }
]

// Expired OAuth state. handler/oauthstore keeps clients, one-time codes, refresh tokens and token
// families as block blobs oauth/<kind>/<id or hash> and never deletes a record once it has
// expired; these rules do, by blob last-modified time. Each number is the longest a record can
// still be valid after its last write (oauthstore.RecordKinds, at the default lifetimes the handler
// runs with) plus a margin, so deletion only ever removes records that can no longer be used. The
// engine runs once a day and deletes a blob only after more than the given days, often up to a day
// later. e2e/deploy (TestOAuthLifecycleRules) checks these rules against RecordKinds.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          // Codes are valid for 5 minutes from creation (DefaultCodeTTL) and written only when
          // created and when redeemed or burnt; a day leaves ample margin. A replay later than that
          // is still refused, as an unknown code, only without revoking the family it started.
          name: 'oauth-codes'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: ['blockBlob']
              prefixMatch: ['oauth/codes/']
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: 1
                }
              }
            }
          }
        }
        {
          // A refresh token expires 30 days after its creation (DefaultRefreshTTL). Its record is
          // rewritten when the token is rotated, and its successor, which reads it on first use, was
          // created before that write and so expires within 30 days of it. 30 days + 1 of margin.
          name: 'oauth-refresh'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: ['blockBlob']
              prefixMatch: ['oauth/refresh/']
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: 31
                }
              }
            }
          }
        }
        {
          // A family must outlive its newest refresh token (30 days) and access tokens (an hour): a
          // missing family counts as revoked. A rotation rewrites the family only if it was last
          // written a day or more before (TouchInterval), so the newest token can be issued up to a
          // day after the family's last write: 30 + 1 days, + 1 of margin.
          name: 'oauth-families'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: ['blockBlob']
              prefixMatch: ['oauth/families/']
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: 32
                }
              }
            }
          }
        }
        {
          // A client unused for 90 days is unknown (DefaultClientIdleTTL), counted from last_used,
          // which is set exactly when the record is written: at registration, and when a use finds
          // it a day or more old (registration lookups, new codes, refreshes via the family touch).
          // Idle expiry and this rule thus count from the same write, and touching only daily just
          // lets an active client's blob be up to a day old. 90 days + 2 of margin.
          name: 'oauth-clients'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: ['blockBlob']
              prefixMatch: ['oauth/clients/']
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: 92
                }
              }
            }
          }
        }
      ]
    }
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
