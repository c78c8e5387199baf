# azd preprovision hook (PowerShell 7): makes sure the azd environment holds the front door's keys
# before Bicep runs, generating only what is missing and never replacing what is there (a new
# signing key would sign every user out; FRONTDOOR.md "Keys"). Same behaviour as preprovision.sh:
#
#   MCP_FRONTDOOR_KEYS  base64 of the JSON key set of `go run ./scripts/keygen`
#   MCP_FUNCTION_KEY    the dedicated host key API Management sends as x-functions-key
#
# Where the azd environment is new each run (CI), provide both as secrets: this hook refuses to
# generate them there unless MCP_ALLOW_KEY_GENERATION=true.
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$missing = @()
if (-not (Get-Command go -ErrorAction SilentlyContinue)) { $missing += 'go (Go 1.26 or later: https://go.dev/dl/)' }
if (-not (Get-Command azd -ErrorAction SilentlyContinue)) { $missing += 'azd (https://aka.ms/azd-install)' }
if ($missing.Count -gt 0) {
    Write-Error ("preprovision: missing: " + ($missing -join ', '))
    exit 1
}

# The repository root (this file is infra/hooks/preprovision.ps1).
Set-Location (Join-Path $PSScriptRoot '../..')

function Get-AzdValue([string]$name) {
    $v = & azd env get-value $name 2>$null
    if ($LASTEXITCODE -eq 0 -and $v) { return ($v -join '').Trim() }
    $global:LASTEXITCODE = 0
    return ''
}
function Get-Value([string]$name) {
    $v = Get-AzdValue $name
    if ($v) { return $v }
    $e = [Environment]::GetEnvironmentVariable($name)
    if ($e) { return $e }
    return ''
}
function Assert-GenerationAllowed([string]$name) {
    if ($env:CI -and $env:MCP_ALLOW_KEY_GENERATION -ne 'true') {
        Write-Error ("preprovision: $name is not set, and this looks like CI: provide it as a pipeline secret " +
            "(copy it from the azd environment that deployed first: azd env get-value $name), " +
            "or set MCP_ALLOW_KEY_GENERATION=true to generate a new one, which signs every user out.")
        exit 1
    }
}

$tmp = Join-Path ([IO.Path]::GetTempPath()) ("mcp-keys-" + [Guid]::NewGuid().ToString('N'))
New-Item -ItemType Directory -Path $tmp | Out-Null
try {
    $keys = Join-Path $tmp 'keys.json'
    $current = Get-Value 'MCP_FRONTDOOR_KEYS'
    if ($current) {
        try { $bytes = [Convert]::FromBase64String($current) }
        catch {
            Write-Error 'preprovision: MCP_FRONTDOOR_KEYS is not valid base64; not replacing it (fix or remove it: azd env get-value MCP_FRONTDOOR_KEYS)'
            exit 1
        }
        [IO.File]::WriteAllBytes($keys, $bytes)
    } else {
        Assert-GenerationAllowed 'MCP_FRONTDOOR_KEYS'
    }

    # keygen adds whatever key the file lacks and keeps the others byte for byte; it prints names only.
    & go run ./scripts/keygen -file $keys
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }

    $encoded = [Convert]::ToBase64String([IO.File]::ReadAllBytes($keys))
    if ($encoded -ne $current -or -not (Get-AzdValue 'MCP_FRONTDOOR_KEYS')) {
        & azd env set MCP_FRONTDOOR_KEYS $encoded | Out-Null
        if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
        Write-Host 'preprovision: MCP_FRONTDOOR_KEYS saved in the azd environment'
    }
} finally {
    Remove-Item -Recurse -Force $tmp -ErrorAction SilentlyContinue
}

$fkey = Get-Value 'MCP_FUNCTION_KEY'
if (-not $fkey) {
    Assert-GenerationAllowed 'MCP_FUNCTION_KEY'
    $b = [byte[]]::new(32)
    [Security.Cryptography.RandomNumberGenerator]::Fill($b)
    $fkey = [Convert]::ToBase64String($b).Replace('+', '-').Replace('/', '_').TrimEnd('=')
    Write-Host 'preprovision: generated MCP_FUNCTION_KEY'
}
if (-not (Get-AzdValue 'MCP_FUNCTION_KEY')) {
    & azd env set MCP_FUNCTION_KEY $fkey | Out-Null
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
    Write-Host 'preprovision: MCP_FUNCTION_KEY saved in the azd environment'
}
