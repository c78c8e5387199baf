targetScope = 'resourceGroup'
extension microsoftGraphV1

@description('Azure region')
param location string = resourceGroup().location
param names array = [
  'a'
  'b'
]

var policy = loadTextContent('../../../../apim-policies/global.xml')

resource sa 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'st${uniqueString(resourceGroup().id)}'
  location: location
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowSharedKeyAccess: false
    minimumTlsVersion: 'TLS1_2'
  }
}

module m 'mod.bicep' = [for n in names: {
  name: 'm-${n}'
  params: { value: length(policy) > 0 ? n : '' }
}]

output id string = sa.id
