#!/usr/bin/env bash
# Installs Mono for the local APIM gateway (apim-policies/gateway) when it is
# missing: apt on Debian and Ubuntu; elsewhere it says what to do and fails.
set -euo pipefail
pkgs=(mono-mcs mono-runtime libnewtonsoft-json-cil-dev libmono-cecil-cil-dev)
have() {
  command -v mono >/dev/null 2>&1 && command -v mcs >/dev/null 2>&1 &&
    [ -f /usr/lib/mono-cecil/Mono.Cecil.dll ] && [ -d /usr/lib/mono/gac/Newtonsoft.Json ]
}
have && exit 0
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "==> apt-get install ${pkgs[*]} (Mono, for the local API Management gateway)"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkgs[@]}" >/dev/null
  have && exit 0
fi
case "$(uname -s)" in
  Darwin) echo "Mono is needed for the local gateway: brew install mono" >&2 ;;
  *) echo "Mono is needed for the local gateway: install ${pkgs[*]} (Debian/Ubuntu), or use WSL on Windows" >&2 ;;
esac
exit 1
