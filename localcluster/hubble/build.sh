#!/usr/bin/env bash
# Fetches Cilium's Go module at the pinned version (Hubble's .proto files, which the observer API loads) and
# builds the `hubble` CLI from it once, cached by version outside the tree.
# Progress goes to stderr; the last line on stdout is the directory holding the binary.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version_file="$here/../../flowapi/hubble/CILIUM_VERSION"
cilium_version="$(tr -d '[:space:]' <"$version_file")"
[[ "$cilium_version" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "build.sh: $version_file: \"$cilium_version\" is not vX.Y.Z" >&2; exit 1; }
out="${MEMBRANE_CACHE:-$HOME/.cache/membrane}/hubble-cilium-${cilium_version}"
mkdir -p "$out"

# One build at a time per cache dir: several developers or tests may call this together.
exec 9>"$out/.build.lock"
flock 9

# The module (and so its api/v1/**/*.proto) in the Go module cache, where flowapi/hubble/proto.ts reads them.
# Cilium's go.mod may ask for a newer Go than the one installed: let the go command fetch that toolchain.
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
(cd / && go mod download "github.com/cilium/cilium@${cilium_version}")

key="$(cat "$version_file" "$here/build.sh" | sha256sum | cut -d' ' -f1)"
if [ -x "$out/hubble" ] && [ "$(cat "$out/hubble.key" 2>/dev/null)" = "$key" ]; then
  echo "build.sh: hubble (cilium ${cilium_version}) cached in $out" >&2
else
  echo "build.sh: building hubble from cilium ${cilium_version}; the first build takes minutes" >&2
  start=$(date +%s)
  # `go install …@version` refuses a module with replace lines, so a small wrapper module requires the
  # pinned version and copies Cilium's replace lines.
  src="$(cd / && go list -m -f '{{.Dir}}' "github.com/cilium/cilium@${cilium_version}")"
  wrap="$out/wrapper"
  rm -rf "$wrap"
  mkdir -p "$wrap"
  {
    echo "module membrane.local/hubble"
    echo
    awk '$1 == "go" { print; exit }' "$src/go.mod"
    echo
    echo "require github.com/cilium/cilium ${cilium_version}"
    echo
    grep -E '^replace ' "$src/go.mod" || true
    # A replace block, if there is one.
    awk '/^replace \($/ { on = 1 } on { print } on && /^\)$/ { on = 0 }' "$src/go.mod"
  } >"$wrap/go.mod"
  cat >"$wrap/tools.go" <<'GO'
//go:build tools

package tools

import _ "github.com/cilium/cilium/hubble"
GO
  (cd "$wrap" && GOFLAGS=-mod=mod go mod tidy >&2)
  ldflags="-s -w -X github.com/cilium/cilium/hubble/pkg.Version=${cilium_version}"
  (cd "$wrap" && GOFLAGS=-buildvcs=false go build -trimpath -ldflags "$ldflags" -o "$out/hubble.tmp" github.com/cilium/cilium/hubble)
  mv "$out/hubble.tmp" "$out/hubble"
  echo "$key" >"$out/hubble.key"
  echo "build.sh: hubble built in $(($(date +%s) - start))s" >&2
fi

echo "$out"
