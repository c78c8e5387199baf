var settings = {
  MCP_RESOURCE_URL: 'https://gw/mcp'
  MCP_TOKEN_ISSUER: 'https://gw'
  MCP_TOKEN_JWKS: '{}'
  MCP_INTERNAL_KEY: '@Microsoft.KeyVault(SecretUri=https://kv/secrets/InternalKey)'
  AzureWebJobsStorage__blobServiceUri: 'https://st.blob.core.windows.net'
  'AzureWebJobsStorage__queueServiceUri': 'https://st.queue.core.windows.net'
}
var list = [
  { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
  { name: 'AzureWebJobsStorage__clientId', value: 'guid' }
]
output s object = settings
output l array = list
