param location string
param manifest object
param globalPolicy string

var namedValues = loadJsonContent('../../policies/named-values.json').namedValues
var policies = {
  'frag/f.xml': loadTextContent('../../policies/frag/f.xml')
  'api.xml': loadTextContent('../../policies/api.xml')
  'op.xml': loadTextContent('../../policies/op.xml')
}

resource svc 'Microsoft.ApiManagement/service@2024-05-01' existing = {
  name: 'x'
}

resource nv 'Microsoft.ApiManagement/service/namedValues@2024-05-01' = [for v in namedValues: {
  parent: svc
  name: v.name
  properties: { displayName: v.name, secret: v.secret, value: 'x' }
}]

resource apis 'Microsoft.ApiManagement/service/apis@2024-05-01' = [for a in manifest.apis: {
  parent: svc
  name: a.name
  properties: { path: a.path, displayName: a.name, protocols: ['https'] }
}]

resource ops 'Microsoft.ApiManagement/service/apis/operations@2024-05-01' = [for o in flatten(map(manifest.apis, a => map(a.operations, op => { api: a.name, op: op }))): {
  name: '${svc.name}/${o.api}/${o.op.name}'
  properties: { displayName: o.op.name, method: 'GET', urlTemplate: '/' }
  dependsOn: [ apis ]
}]
