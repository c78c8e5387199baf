var settings = {
  MCP_RESOURCE_URL: 'https://gw/mcp'
  MCP_TOKEN_ISSUER: 'https://gw'
  MCP_TOKEN_JWKS: '{}'
  // MCP_INTERNAL_KEY: 'commented out, so missing'
  AzureWebJobsStorage__blobServiceUri: 'https://st.blob.core.windows.net'
  AzureWebJobsStorage__queueServiceUri: 'https://st.queue.core.windows.net'
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: 'guid'
}
output s object = settings

resource literalOp 'Microsoft.ApiManagement/service/apis/operations@2024-05-01' = {
  name: 'svc/api/extra'
  properties: { displayName: 'not in the manifest', method: 'GET', urlTemplate: '/extra' }
}
