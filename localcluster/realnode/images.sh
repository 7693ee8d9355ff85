#!/usr/bin/env bash
# Builds the real nodes' images with no registry, cached by content hash outside the tree: the pause image (a
# static build of the pinned Kubernetes module's pause.c) and a workload image (Debian's static busybox), each an
# OCI archive that `ctr images import` takes with the reference it carries.
# Progress goes to stderr; the last line on stdout is the directory holding pause.tar, busybox.tar and images.env.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=oci.sh
source "$here/oci.sh"

# The reference kubeadm and the module's build/pause/Makefile give the pause image of this Kubernetes version.
pause_ref="registry.k8s.io/pause:3.10.2"
busybox_bin="/bin/busybox"
[ -x "$busybox_bin" ] || { echo "images.sh: $busybox_bin missing: apt-get install busybox-static (scripts/install-deps.sh)" >&2; exit 1; }
busybox_version="$(dpkg-query -W -f='${Version}' busybox-static | sed 's/^[0-9]*://; s/[^A-Za-z0-9_.-]/_/g')"
busybox_ref="membrane.local/busybox:${busybox_version}"
k8s_dir="$(cd "$here/../controlplane" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
pause_c="$k8s_dir/build/pause/linux/pause.c"

cache="${MEMBRANE_CACHE:-$HOME/.cache/membrane}"
key="$( (cat "$here/images.sh" "$here/oci.sh" "$pause_c" "$busybox_bin"; echo "$pause_ref $busybox_ref") | sha256sum | cut -d' ' -f1)"
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

# pause: the sandbox every pod's namespaces hang on.
mkdir -p "$work/pause-root"
gcc -static -Os -Wall -Werror -DVERSION="v${pause_ref##*:}-membrane" -o "$work/pause-root/pause" "$pause_c"
strip "$work/pause-root/pause"
rootfs_layer "$work/pause-root" "$work/pause-layer.tar"
oci_archive "$out/pause.tar" "$pause_ref" '{"Entrypoint": ["/pause"], "User": "65535:65535"}' "$work/pause-layer.tar"

# busybox: a shell, an HTTP server and the usual tools in one static binary; by default it serves /www on 8080.
root="$work/busybox-root"
mkdir -p "$root/bin" "$root/tmp" "$root/www" "$root/etc"
chmod 1777 "$root/tmp"
cp "$busybox_bin" "$root/bin/busybox"
for tool in sh ls cat echo sleep httpd wget ps mkdir hostname env id true false test grep nc ip; do ln -s busybox "$root/bin/$tool"; done
echo "membrane real node" >"$root/www/index.html"
printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
rootfs_layer "$root" "$work/busybox-layer.tar"
oci_archive "$out/busybox.tar" "$busybox_ref" \
  '{"Env": ["PATH=/bin"], "Cmd": ["/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/www"], "WorkingDir": "/"}' "$work/busybox-layer.tar"

printf 'PAUSE_IMAGE=%s\nBUSYBOX_IMAGE=%s\n' "$pause_ref" "$busybox_ref" >"$out/images.env"
echo "$key" >"$out/images.key"
echo "images.sh: images built in $(($(date +%s) - start))s into $out" >&2
echo "$out"
