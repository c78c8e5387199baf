// Fixture for TestConsistencyChecksCanFail: keeps every rule.
targetScope = 'resourceGroup'

@description('required, supplied by main.parameters.json')
param environmentName string
param location string = resourceGroup().location
param tags object?

var manifest = loadJsonContent('../policies/apis.json')
var globalPolicy = loadTextContent('../policies/global.xml')

module apim 'modules/apim.bicep' = {
  name: 'apim'
  params: {
    location: location
    manifest: manifest
    globalPolicy: globalPolicy
  }
}

module app 'modules/app.bicep' = {
  name: 'app-${environmentName}'
}
