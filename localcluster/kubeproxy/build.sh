#!/usr/bin/env bash
# Builds the real nodes' kube-proxy from the pinned k8s.io/kubernetes module (the control plane's version and
# replace block, in a module of its own), cached by content hash outside the tree like the control plane.
# Progress goes to stderr; the last line on stdout is the directory holding kube-proxy.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

k8s_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' go.mod)"
[ -n "$k8s_version" ] || { echo "kubeproxy/build.sh: no k8s.io/kubernetes version in $here/go.mod" >&2; exit 1; }
cp_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' ../controlplane/go.mod)"
[ "$k8s_version" = "$cp_version" ] || { echo "kubeproxy/build.sh: k8s.io/kubernetes $k8s_version here, $cp_version in the control plane: pin the same" >&2; exit 1; }
cache="${MEMBRANE_CACHE:-$HOME/.cache/membrane}"
key="$(cat go.mod go.sum ./*.go build.sh | sha256sum | cut -d' ' -f1)"
out="$cache/kube-proxy-${k8s_version}-${key:0:16}"
mkdir -p "$out"
exec 9>"$out/.build.lock"
flock 9
if [ -x "$out/kube-proxy" ] && [ "$(cat "$out/kube-proxy.key" 2>/dev/null)" = "$key" ]; then
  echo "kubeproxy/build.sh: kube-proxy ${k8s_version} cached in $out" >&2
  echo "$out"
  exit 0
fi
echo "kubeproxy/build.sh: building kube-proxy (k8s ${k8s_version})" >&2
start=$(date +%s)
# The version it reports, stamped as the control plane's is (Kubernetes' hack/lib/version.sh).
minor="$(echo "$k8s_version" | cut -d. -f2)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=${k8s_version} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor}"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
go build -trimpath -ldflags "$ldflags" -o "$out/kube-proxy.tmp" .
mv "$out/kube-proxy.tmp" "$out/kube-proxy"
echo "$key" >"$out/kube-proxy.key"
echo "kubeproxy/build.sh: kube-proxy built in $(($(date +%s) - start))s" >&2
echo "$out"
