// Fixture for TestConsistencyChecksCanFail: breaks every rule once.
// module commentedOut 'modules/commentedOut.bicep' = {}
/* loadTextContent('commentedOut.xml') */
param environmentName string
param requiredOne string
param optionalOne string = 'x'
param nullableOne string?

var manifest = loadJsonContent('../policies/apis.json')
var g = loadTextContent('../policies/global.xml')
var f = loadTextContent('../policies/frag/f.xml')
var a = loadTextContent('../policies/api.xml')
var n = loadTextContent('../policies/nope.xml')
var url = 'https://example.com/path' // a URL keeps its //

module missing 'modules/missing.bicep' = {
  name: 'missing'
}

module app 'modules/app.bicep' = {
  name: 'app'
}
