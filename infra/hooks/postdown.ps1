# azd postdown hook (PowerShell 7): deletes the Entra application of this environment. It lives in
# the tenant, not in the resource group, so `azd down --purge` leaves it behind. Needs the Azure CLI
# signed in to the same tenant (az login) with rights to delete the application (its owner, or
# Application Administrator). Without it, this prints the command to run by hand. Same behaviour
# as postdown.sh.
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$app = $env:ENTRA_APP_OBJECT_ID
$client = $env:ENTRA_APP_CLIENT_ID
if (-not $app) {
    Write-Host 'postdown: no ENTRA_APP_OBJECT_ID in the azd environment; no Entra application to delete'
    exit 0
}

$manual = "delete it yourself: az ad app delete --id $app   (or Entra ID > App registrations > client id $client > Delete)"
if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
    Write-Error "postdown: missing: az (the Azure CLI, https://aka.ms/azcli), needed to delete the Entra application $client; $manual"
    exit 1
}

& az ad app delete --id $app | Out-Null
if ($LASTEXITCODE -ne 0) {
    Write-Error "postdown: could not delete the Entra application $client (signed in with az login, to the right tenant?); $manual"
    exit 1
}
Write-Host "postdown: deleted the Entra application $client"
# Remove it from the tenant's deleted items too (otherwise restorable for 30 days).
& az rest --method DELETE --url "https://graph.microsoft.com/v1.0/directory/deletedItems/$app" 2>$null | Out-Null
if ($LASTEXITCODE -eq 0) {
    Write-Host 'postdown: purged it from the deleted items'
} else {
    Write-Host "postdown: it stays in Entra ID's deleted items for 30 days (could not purge it)"
}
$global:LASTEXITCODE = 0
if (Get-Command azd -ErrorAction SilentlyContinue) {
    & azd env set ENTRA_APP_OBJECT_ID '' 2>$null | Out-Null
    $global:LASTEXITCODE = 0
}
exit 0
