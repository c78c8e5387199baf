#!/usr/bin/env bash
# Compiles the local gateway (C#, Mono) into apim-policies/gateway/bin/.
# Needs the Debian packages mono-mcs, mono-runtime, libnewtonsoft-json-cil-dev
# and libmono-cecil-cil-dev (scripts/mono.sh installs them).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/bin}
mkdir -p "$out"
cecil=$(pkg-config --variable=Libraries mono-cecil 2>/dev/null | tr ' ' '\n' | grep -m1 'Mono.Cecil.dll$' || true)
[ -n "$cecil" ] || cecil=/usr/lib/mono-cecil/Mono.Cecil.dll
newtonsoft=$(pkg-config --variable=Libraries newtonsoft-json 2>/dev/null | tr ' ' '\n' | grep -m1 'Newtonsoft.Json.dll$' || true)
[ -n "$newtonsoft" ] || newtonsoft=/usr/lib/cli/Newtonsoft.Json-5.0/Newtonsoft.Json.dll
# Mono.Cecil is not in the GAC: ship it beside the executable.
cp "$cecil" "$out/"
mcs -nologo -debug -target:exe -out:"$out/gateway.exe" \
  -r:System.dll -r:System.Core.dll -r:System.Xml.dll -r:System.Xml.Linq.dll -r:System.Numerics.dll \
  -r:System.Security.dll -r:Microsoft.CSharp.dll -r:"$newtonsoft" -r:"$out/Mono.Cecil.dll" \
  $(find "$here/src" -name '*.cs' | sort)
echo "built $out/gateway.exe"
