#!/usr/bin/env bash
# Builds the real nodes' cluster DNS image with no registry: CoreDNS from its Go module (a static binary of
# coredns/main.go, which imports only the plugins the Corefile uses, pinned by coredns/go.mod and go.sum, cached by
# content hash like kube-proxy) on a scratch-like rootfs, an OCI archive `ctr images import` takes.
# Progress goes to stderr; the last line on stdout is the directory holding coredns.tar and coredns-image.env.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=oci.sh
source "$here/oci.sh"

src="$here/coredns"
coredns_version="$(awk '{ sub(/^require /, "") } $1 == "github.com/coredns/coredns" && $2 ~ /^v/ { print $2; exit }' "$src/go.mod")"
[ -n "$coredns_version" ] || { echo "coredns-image.sh: no github.com/coredns/coredns version in $src/go.mod" >&2; exit 1; }
ref="membrane.local/coredns:${coredns_version}"
cache="${MEMBRANE_CACHE:-$HOME/.cache/membrane}"

# The binary: one build per content of its module (it does not depend on this repository's other sources).
bin_key="$( (cd "$src" && cat go.mod go.sum ./*.go) | sha256sum | cut -d' ' -f1)"
bin_dir="$cache/coredns-${coredns_version}-${bin_key:0:16}"
mkdir -p "$bin_dir"
exec 8>"$bin_dir/.build.lock"
flock 8
if [ ! -x "$bin_dir/coredns" ] || [ "$(cat "$bin_dir/coredns.key" 2>/dev/null)" != "$bin_key" ]; then
  echo "coredns-image.sh: building CoreDNS ${coredns_version} (the first build downloads its modules: minutes)" >&2
  start=$(date +%s)
  # Static, so the rootfs needs no libc. -mod=readonly: go.sum pins every module, nothing is resolved anew.
  (cd "$src" && GOFLAGS=-buildvcs=false CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "-s -w" -o "$bin_dir/coredns.tmp" .)
  mv "$bin_dir/coredns.tmp" "$bin_dir/coredns"
  echo "$bin_key" >"$bin_dir/coredns.key"
  echo "coredns-image.sh: CoreDNS built in $(($(date +%s) - start))s" >&2
fi
flock -u 8

key="$( (cat "$here/coredns-image.sh" "$here/oci.sh" "$bin_dir/coredns"; echo "$ref") | sha256sum | cut -d' ' -f1)"
out="$cache/realnode-coredns-${key:0:16}"
mkdir -p "$out"
exec 9>"$out/.build.lock"
flock 9
if [ "$(cat "$out/image.key" 2>/dev/null)" = "$key" ]; then
  echo "coredns-image.sh: $ref cached in $out" >&2
  echo "$out"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root/etc/coredns" "$root/tmp"
chmod 1777 "$root/tmp"
cp "$bin_dir/coredns" "$root/coredns"
rootfs_layer "$root" "$work/layer.tar"
oci_archive "$out/coredns.tar" "$ref" '{"Entrypoint": ["/coredns"], "Cmd": ["-conf", "/etc/coredns/Corefile"], "WorkingDir": "/"}' "$work/layer.tar"
printf 'COREDNS_IMAGE=%s\n' "$ref" >"$out/coredns-image.env"
echo "$key" >"$out/image.key"
echo "coredns-image.sh: $ref built into $out" >&2
echo "$out"
