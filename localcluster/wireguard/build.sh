#!/usr/bin/env bash
# Builds the userspace WireGuard (`wireguard-go`) from its Go module at the pinned version, once, cached by
# version outside the tree (this kernel has no in-kernel WireGuard; Debian's 0.0.20220316 is 5.5x slower).
# Progress goes to stderr; the last line on stdout is the path of the binary. Idempotent.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="$(tr -d '[:space:]' <"$here/VERSION")"
[[ "$version" =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9]{14}-[0-9a-f]{12})?$ ]] || { echo "build.sh: $here/VERSION: \"$version\" is not a Go module version" >&2; exit 1; }
out="${MEMBRANE_CACHE:-$HOME/.cache/membrane}/wireguard-go-${version}"
mkdir -p "$out"
export PATH="/usr/local/go/bin:$PATH"

# One build at a time per cache dir: several developers or tests may call this together.
exec 9>"$out/.build.lock"
flock 9

key="$(cat "$here/VERSION" "$here/build.sh" | sha256sum | cut -d' ' -f1)"
if [ -x "$out/wireguard-go" ] && [ "$(cat "$out/wireguard-go.key" 2>/dev/null)" = "$key" ]; then
  echo "build.sh: wireguard-go ${version} cached in $out" >&2
else
  echo "build.sh: building wireguard-go ${version} from golang.zx2c4.com/wireguard" >&2
  start=$(date +%s)
  GOBIN="$out/bin.tmp" GOFLAGS=-buildvcs=false go install -trimpath -ldflags "-s -w" "golang.zx2c4.com/wireguard@${version}"
  mv "$out/bin.tmp/wireguard" "$out/wireguard-go"
  rm -rf "$out/bin.tmp"
  echo "$key" >"$out/wireguard-go.key"
  echo "build.sh: wireguard-go built in $(($(date +%s) - start))s" >&2
fi

echo "$out/wireguard-go"
