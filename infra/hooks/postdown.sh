#!/bin/sh
# azd postdown hook (POSIX): deletes the Entra application of this environment. It lives in the
# tenant, not in the resource group, so `azd down --purge` leaves it behind. Needs the Azure CLI
# signed in to the same tenant (az login) with rights to delete the application (its owner, or
# Application Administrator). Without it, this prints the command to run by hand.
set -eu

app="${ENTRA_APP_OBJECT_ID:-}"
client="${ENTRA_APP_CLIENT_ID:-}"
if [ -z "$app" ]; then
  echo "postdown: no ENTRA_APP_OBJECT_ID in the azd environment; no Entra application to delete"
  exit 0
fi

manual="delete it yourself: az ad app delete --id $app   (or Entra ID > App registrations > client id $client > Delete)"
if ! command -v az >/dev/null 2>&1; then
  echo "postdown: missing: az (the Azure CLI, https://aka.ms/azcli), needed to delete the Entra application $client;" >&2
  echo "  $manual" >&2
  exit 1
fi

if ! az ad app delete --id "$app" >/dev/null; then
  echo "postdown: could not delete the Entra application $client (signed in with az login, to the right tenant?);" >&2
  echo "  $manual" >&2
  exit 1
fi
echo "postdown: deleted the Entra application $client"
# Remove it from the tenant's deleted items too, so the next `azd up` of this environment starts
# clean (a deleted application otherwise stays restorable for 30 days).
if az rest --method DELETE --url "https://graph.microsoft.com/v1.0/directory/deletedItems/$app" >/dev/null 2>&1; then
  echo "postdown: purged it from the deleted items"
else
  echo "postdown: it stays in Entra ID's deleted items for 30 days (could not purge it)"
fi
if command -v azd >/dev/null 2>&1; then
  azd env set ENTRA_APP_OBJECT_ID "" >/dev/null 2>&1 || true
fi
