param location string = resourceGroup().location

resource sa 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'x'
  location: location
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
