#!/usr/bin/env bash
# Builds agnhost, the upstream e2e suite's test workload, with no registry: a static binary of test/images/agnhost
# from the pinned k8s.io/kubernetes module (agnhost/go.mod, the control plane's version), cached by content hash, on a
# rootfs with Debian's static busybox for a shell, as an OCI archive `ctr images import` takes under the exact
# reference the pinned suite asks for (test/utils/image/manifest.go), so that `imagePullPolicy: IfNotPresent` finds
# it on the node and nothing is pulled. Progress goes to stderr; the last line on stdout is the directory holding
# agnhost.tar and agnhost-image.env.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../realnode/oci.sh
source "$here/../realnode/oci.sh"

src="$here/agnhost"
k8s_dir="$(cd "$src" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
agnhost_src="$k8s_dir/test/images/agnhost"
# The reference the suite computes: the promoter registry, "agnhost" and the version manifest.go pins for Agnhost.
manifest="$k8s_dir/test/utils/image/manifest.go"
registry="$(sed -n 's/^[[:space:]]*PromoterE2eRegistry:[[:space:]]*"\([^"]*\)".*/\1/p' "$manifest")"
version="$(sed -n 's/^[[:space:]]*configs\[Agnhost\] = Config{list\.PromoterE2eRegistry, "agnhost", "\([^"]*\)"}.*/\1/p' "$manifest")"
[ -n "$registry" ] && [ -n "$version" ] || { echo "agnhost-image.sh: no agnhost reference found in $manifest" >&2; exit 1; }
[ "$version" = "$(cat "$agnhost_src/VERSION")" ] || { echo "agnhost-image.sh: manifest.go asks for agnhost $version, the module's source is $(cat "$agnhost_src/VERSION")" >&2; exit 1; }
ref="$registry/agnhost:$version"
busybox_bin="/bin/busybox"
[ -x "$busybox_bin" ] || { echo "agnhost-image.sh: $busybox_bin missing: apt-get install busybox-static (scripts/install-deps.sh)" >&2; exit 1; }
cache="${MEMBRANE_CACHE:-$HOME/.cache/membrane}"

bin_key="$( (cd "$src" && cat go.mod go.sum) | sha256sum | cut -d' ' -f1)"
bin_dir="$cache/agnhost-${version}-${bin_key:0:16}"
mkdir -p "$bin_dir"
exec 8>"$bin_dir/.build.lock"
flock 8
if [ ! -x "$bin_dir/agnhost" ] || [ "$(cat "$bin_dir/agnhost.key" 2>/dev/null)" != "$bin_key" ]; then
  echo "agnhost-image.sh: building agnhost ${version}" >&2
  start=$(date +%s)
  # Static, so the rootfs needs no libc; -mod=readonly: go.sum pins every module.
  (cd "$src" && GOFLAGS=-buildvcs=false CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "-s -w" -o "$bin_dir/agnhost.tmp" k8s.io/kubernetes/test/images/agnhost)
  mv "$bin_dir/agnhost.tmp" "$bin_dir/agnhost"
  echo "$bin_key" >"$bin_dir/agnhost.key"
  echo "agnhost-image.sh: agnhost built in $(($(date +%s) - start))s" >&2
fi
flock -u 8

key="$( (cat "$here/agnhost-image.sh" "$here/../realnode/oci.sh" "$bin_dir/agnhost" "$busybox_bin"; echo "$ref") | sha256sum | cut -d' ' -f1)"
out="$cache/upstream-agnhost-${key:0:16}"
mkdir -p "$out"
exec 9>"$out/.build.lock"
flock 9
if [ "$(cat "$out/image.key" 2>/dev/null)" = "$key" ]; then
  echo "agnhost-image.sh: $ref cached in $out" >&2
  echo "$out"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root/bin" "$root/tmp" "$root/uploads" "$root/etc"
chmod 1777 "$root/tmp"
# As upstream's Dockerfile lays it out: /agnhost (and /agnhost-2), porter's default certificate beside it.
cp "$bin_dir/agnhost" "$root/agnhost"
ln -s agnhost "$root/agnhost-2"
cp "$agnhost_src/porter/localhost.crt" "$agnhost_src/porter/localhost.key" "$root/"
cp "$busybox_bin" "$root/bin/busybox"
for tool in sh ls cat echo sleep wget ps mkdir hostname env id true false test grep nc ip nslookup; do ln -s busybox "$root/bin/$tool"; done
printf 'root:x:0:0:root:/:/bin/sh\nuser-defined-in-image:x:1000:1000::/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nuser-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\nnogroup:x:65534:\n' >"$root/etc/group"
rootfs_layer "$root" "$work/layer.tar"
oci_archive "$out/agnhost.tar" "$ref" '{"Entrypoint": ["/agnhost"], "Cmd": ["pause"], "Env": ["PATH=/bin:/"], "WorkingDir": "/"}' "$work/layer.tar"
printf 'AGNHOST_IMAGE=%s\n' "$ref" >"$out/agnhost-image.env"
echo "$key" >"$out/image.key"
echo "agnhost-image.sh: $ref built into $out" >&2
echo "$out"
