// The virtual network: a subnet delegated to Microsoft.App/environments for the Flex Consumption
// Function App's VNet integration, a subnet for private endpoints, and private endpoints with
// private DNS zones for the storage account's Blob and Queue services.
param location string
param tags object
param virtualNetworkName string
param privateEndpointPrefix string
param storageAccountId string

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: virtualNetworkName
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        '10.0.0.0/16'
      ]
    }
    subnets: [
      {
        name: 'snet-func'
        properties: {
          addressPrefix: '10.0.1.0/24'
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: 'snet-pe'
        properties: {
          addressPrefix: '10.0.2.0/24'
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }

  resource functionSubnet 'subnets' existing = {
    name: 'snet-func'
  }

  resource privateEndpointSubnet 'subnets' existing = {
    name: 'snet-pe'
  }
}

// One private endpoint and one private DNS zone per storage service the system uses.
var services = [
  'blob'
  'queue'
]

resource dnsZones 'Microsoft.Network/privateDnsZones@2020-06-01' = [
  for service in services: {
    name: 'privatelink.${service}.${environment().suffixes.storage}'
    location: 'global'
    tags: tags
  }
]

resource dnsZoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [
  for (service, i) in services: {
    parent: dnsZones[i]
    name: '${virtualNetworkName}-link'
    location: 'global'
    tags: tags
    properties: {
      registrationEnabled: false
      virtualNetwork: {
        id: vnet.id
      }
    }
  }
]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [
  for (service, i) in services: {
    name: '${privateEndpointPrefix}-${service}'
    location: location
    tags: tags
    properties: {
      subnet: {
        id: vnet::privateEndpointSubnet.id
      }
      privateLinkServiceConnections: [
        {
          name: '${privateEndpointPrefix}-${service}'
          properties: {
            privateLinkServiceId: storageAccountId
            groupIds: [
              service
            ]
          }
        }
      ]
    }
  }
]

resource dnsZoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [
  for (service, i) in services: {
    parent: privateEndpoints[i]
    name: 'default'
    properties: {
      privateDnsZoneConfigs: [
        {
          name: replace('privatelink.${service}.${environment().suffixes.storage}', '.', '-')
          properties: {
            privateDnsZoneId: dnsZones[i].id
          }
        }
      ]
    }
  }
]

output virtualNetworkId string = vnet.id
output functionSubnetId string = vnet::functionSubnet.id
output privateEndpointSubnetId string = vnet::privateEndpointSubnet.id
