#!/usr/bin/env bash
# Builds the Membrane image on this machine with no container engine and no registry, from the Containerfile's
# inputs: a Debian bookworm userland from Debian's packages (mmdebstrap: the libraries and tools the final stage
# installs), the pinned Node of .node-version (.tools/node, the npm package the recipe verifies; stripped of its
# debug symbols as the recipe does), the bundle with the CNI plugin's single executable (make build), the eBPF
# objects (make -C bpf), koffi, Cilium's api/v1 .proto files of the pinned module, and wireguard-go of the pinned
# module (localcluster/wireguard/build.sh, cached: the agent's --encryption wireguard runs it).
# Two layers, as the recipe's stages: the Debian base (cached by its package list, it changes rarely) and Membrane
# (cached by the content hash of everything copied). Tagged as the chart's default image reference
# (IMAGE_REPOSITORY:<package.json version>, what `make image` tags).
# Progress goes to stderr; the last line on stdout is the directory holding membrane.tar and membrane-image.env.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=oci.sh
source "$here/oci.sh"

node="$root/.tools/node/bin/node"
[ "$("$node" --version 2>/dev/null)" = "v$(cat "$root/.node-version")" ] || { echo "membrane-image.sh: $node is not Node $(cat "$root/.node-version"): run scripts/install-deps.sh" >&2; exit 1; }
command -v mmdebstrap >/dev/null || { echo "membrane-image.sh: mmdebstrap missing: apt-get install mmdebstrap (scripts/install-deps.sh)" >&2; exit 1; }
repository="$(sed -n 's/^IMAGE_REPOSITORY := //p' "$root/Makefile")"
version="$(jq -r .version "$root/package.json")"
ref="${repository}:${version}"
cilium_version="$(tr -d '[:space:]' <"$root/flowapi/hubble/CILIUM_VERSION")"
protos="$(go env GOMODCACHE)/github.com/cilium/cilium@${cilium_version}/api/v1"
[ -f "$protos/observer/observer.proto" ] || { echo "membrane-image.sh: $protos/observer/observer.proto missing: run scripts/install-deps.sh (it fetches the Cilium module)" >&2; exit 1; }
command -v strip >/dev/null || { echo "membrane-image.sh: strip missing: apt-get install binutils" >&2; exit 1; }
wireguard_go="$("$root/localcluster/wireguard/build.sh")"

cache="${MEMBRANE_CACHE:-$HOME/.cache/membrane}"
mkdir -p "$cache"
start=$(date +%s)

# The base: the final stage's `apt-get install` (the same packages) on Debian's essential set, which brings the shell.
# libstdc++6 and libatomic1 are what the Node binary links besides libc; libbpf1 (libelf1, zlib1g) is what koffi opens
# for the agent's loader; iproute2's `ip` and util-linux's `nsenter` are what the agent runs; `mount` (its own package,
# not in the essential set) is what the runtime mounts tracefs with in a private mount namespace (node-agent/runtime/tracefs.ts).
packages="ca-certificates,libstdc++6,libatomic1,libbpf1,libelf1,zlib1g,iproute2,util-linux,mount"
debootstrap=(--mode=root --format=tar --variant=essential --include="$packages" --skip=output/dev
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' bookworm)
base_key="$(echo "${debootstrap[*]}" | sha256sum | cut -d' ' -f1)"
base="$cache/membrane-image-base-${base_key:0:16}.tar"
exec 8>"$cache/membrane-image-base.lock"
flock 8
if [ ! -f "$base" ]; then
  echo "membrane-image.sh: building the Debian base ($packages)" >&2
  SOURCE_DATE_EPOCH=0 mmdebstrap --quiet "${debootstrap[@]}" "$base.tmp" </dev/null
  mv "$base.tmp" "$base"
fi
flock -u 8

# Membrane: the final stage's COPYs, built fresh (both makes are incremental).
make -s -C "$root" build >&2
make -s -C "$root/bpf" >&2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
app="$work/app"
mkdir -p "$app/usr/local/bin" "$app/opt/membrane/flowapi/hubble" "$app/opt/membrane/bpf" "$app/opt/membrane/node_modules" "$app/opt/membrane/hubble-proto"
strip -o "$app/usr/local/bin/node" "$node"
cp "$wireguard_go" "$app/usr/local/bin/wireguard-go"
cp "$root/package.json" "$app/opt/membrane/package.json"
cp -r "$root/dist" "$app/opt/membrane/dist"
rm -f "$app/opt/membrane/dist/membrane.mk" # the build's make rule, not part of the program
cp "$root/flowapi/hubble/CILIUM_VERSION" "$app/opt/membrane/flowapi/hubble/CILIUM_VERSION"
mkdir -p "$app/opt/membrane/bpf/build"
cp "$root"/bpf/build/*.o "$app/opt/membrane/bpf/build/"
cp -rL "$root/node_modules/koffi" "$root/node_modules/@koromix" "$app/opt/membrane/node_modules/"
(cd "$protos" && find . -name '*.proto' -exec cp --parents {} "$app/opt/membrane/hubble-proto/" \;)
chmod -R u+rwX,go+rX,go-w "$app"
rootfs_layer "$app" "$work/app.tar"

config='{"Entrypoint": ["node", "/opt/membrane/dist/membrane.mjs"], "WorkingDir": "/opt/membrane",
  "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "MEMBRANE_HUBBLE_PROTO_DIR=/opt/membrane/hubble-proto"]}'
key="$( (sha256sum "$base" "$work/app.tar" "$here/oci.sh" | cut -d' ' -f1; echo "$ref $config") | sha256sum | cut -d' ' -f1)"
out="$cache/membrane-image-${key:0:16}"
mkdir -p "$out"
exec 9>"$out/.build.lock"
flock 9
if [ "$(cat "$out/image.key" 2>/dev/null)" = "$key" ]; then
  echo "membrane-image.sh: $ref cached in $out" >&2
  echo "$out"
  exit 0
fi
oci_archive "$out/membrane.tar" "$ref" "$config" "$base" "$work/app.tar"
printf 'MEMBRANE_IMAGE=%s\n' "$ref" >"$out/membrane-image.env"
echo "$key" >"$out/image.key"
# Each change of the sources makes a new image: those not used for a day go.
find "$cache" -maxdepth 1 -name 'membrane-image-????????????????' -type d ! -path "$out" -mtime +0 -exec rm -rf {} + 2>/dev/null || true
echo "membrane-image.sh: $ref built in $(($(date +%s) - start))s into $out ($(du -m "$out/membrane.tar" | cut -f1) MB)" >&2
echo "$out"
