#!/usr/bin/env bash
# Builds the real nodes' images with no registry, cached by content hash outside the tree: the pause image (a
# static build of the pinned Kubernetes module's pause.c) and a workload image (Debian's static busybox), each an
# OCI archive that `ctr images import` takes with the reference it carries.
# Progress goes to stderr; the last line on stdout is the directory holding pause.tar, busybox.tar and images.env.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# The reference kubeadm and the module's build/pause/Makefile give the pause image of this Kubernetes version.
pause_ref="registry.k8s.io/pause:3.10.2"
busybox_bin="/bin/busybox"
[ -x "$busybox_bin" ] || { echo "images.sh: $busybox_bin missing: apt-get install busybox-static (scripts/install-deps.sh)" >&2; exit 1; }
busybox_version="$(dpkg-query -W -f='${Version}' busybox-static | sed 's/^[0-9]*://; s/[^A-Za-z0-9_.-]/_/g')"
busybox_ref="membrane.local/busybox:${busybox_version}"
k8s_dir="$(cd "$here/../controlplane" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
pause_c="$k8s_dir/build/pause/linux/pause.c"

cache="${MEMBRANE_CACHE:-$HOME/.cache/membrane}"
key="$( (cat "$here/images.sh" "$pause_c" "$busybox_bin"; echo "$pause_ref $busybox_ref") | sha256sum | cut -d' ' -f1)"
out="$cache/realnode-images-${key:0:16}"
mkdir -p "$out"
exec 9>"$out/.build.lock"
flock 9
if [ "$(cat "$out/images.key" 2>/dev/null)" = "$key" ]; then
  echo "images.sh: images cached in $out" >&2
  echo "$out"
  exit 0
fi
start=$(date +%s)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

# oci_archive NAME REF ROOTFS CONFIG_JSON: one uncompressed layer of ROOTFS, written reproducibly (sorted, owner 0,
# time 0), then config, manifest and index.json with the reference as containerd's image-name annotation.
oci_archive() {
  local name="$1" ref="$2" rootfs="$3" config_json="$4" layout="$work/$1-layout"
  mkdir -p "$layout/blobs/sha256"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$rootfs" -cf "$work/$name-layer.tar" .
  local layer_sha layer_size config_sha config_size manifest_sha manifest_size
  layer_sha="$(sha "$work/$name-layer.tar")"
  layer_size="$(size "$work/$name-layer.tar")"
  mv "$work/$name-layer.tar" "$layout/blobs/sha256/$layer_sha"
  jq -c --arg diff "sha256:$layer_sha" '{architecture: "amd64", os: "linux", config: ., rootfs: {type: "layers", diff_ids: [$diff]}}' \
    <<<"$config_json" >"$work/$name-config.json"
  config_sha="$(sha "$work/$name-config.json")"
  config_size="$(size "$work/$name-config.json")"
  mv "$work/$name-config.json" "$layout/blobs/sha256/$config_sha"
  jq -nc --arg c "sha256:$config_sha" --argjson cs "$config_size" --arg l "sha256:$layer_sha" --argjson ls "$layer_size" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs},
      layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $l, size: $ls}]}' >"$work/$name-manifest.json"
  manifest_sha="$(sha "$work/$name-manifest.json")"
  manifest_size="$(size "$work/$name-manifest.json")"
  mv "$work/$name-manifest.json" "$layout/blobs/sha256/$manifest_sha"
  jq -nc --arg m "sha256:$manifest_sha" --argjson ms "$manifest_size" --arg ref "$ref" --arg tag "${ref##*:}" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $m, size: $ms,
                   annotations: {"io.containerd.image.name": $ref, "org.opencontainers.image.ref.name": $tag}}]}' >"$layout/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$layout" -cf "$out/$name.tar.tmp" .
  mv "$out/$name.tar.tmp" "$out/$name.tar"
}

# pause: the sandbox every pod's namespaces hang on.
mkdir -p "$work/pause-root"
gcc -static -Os -Wall -Werror -DVERSION="v${pause_ref##*:}-membrane" -o "$work/pause-root/pause" "$pause_c"
strip "$work/pause-root/pause"
oci_archive pause "$pause_ref" "$work/pause-root" '{"Entrypoint": ["/pause"], "User": "65535:65535"}'

# busybox: a shell, an HTTP server and the usual tools in one static binary; by default it serves /www on 8080.
root="$work/busybox-root"
mkdir -p "$root/bin" "$root/tmp" "$root/www" "$root/etc"
chmod 1777 "$root/tmp"
cp "$busybox_bin" "$root/bin/busybox"
for tool in sh ls cat echo sleep httpd wget ps mkdir hostname env id true false test grep nc ip; do ln -s busybox "$root/bin/$tool"; done
echo "membrane real node" >"$root/www/index.html"
printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
oci_archive busybox "$busybox_ref" "$root" \
  '{"Env": ["PATH=/bin"], "Cmd": ["/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/www"], "WorkingDir": "/"}'

printf 'PAUSE_IMAGE=%s\nBUSYBOX_IMAGE=%s\n' "$pause_ref" "$busybox_ref" >"$out/images.env"
echo "$key" >"$out/images.key"
echo "images.sh: images built in $(($(date +%s) - start))s into $out" >&2
echo "$out"
