#!/usr/bin/env bash
# Builds the local control plane (kube-apiserver + embedded etcd, kube-scheduler, kube-controller-manager and a
# real node's kubelet: one binary) and helm once, cached by content hash outside the tree.
# Progress goes to stderr; the last line on stdout is the directory holding the binaries.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

k8s_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' go.mod)"
helm_version="v3.22.0"
[ -n "$k8s_version" ] || { echo "build.sh: no k8s.io/kubernetes version in $here/go.mod" >&2; exit 1; }
cache="${MEMBRANE_CACHE:-$HOME/.cache/membrane}"
# The cache key is the content that decides the binary, not just the version; it names the dir, so
# worktrees with different sources (several developers on one machine) each keep their own build.
key="$(cat go.mod go.sum ./*.go build.sh | sha256sum | cut -d' ' -f1)"
out="$cache/controlplane-k8s-${k8s_version}-${key:0:16}"
helm_dir="$cache/helm-${helm_version}"
mkdir -p "$out" "$helm_dir"

# One build at a time per cache dir: several developers or tests may call this together.
exec 9>"$out/.build.lock"
flock 9
if [ -x "$out/membrane-controlplane" ] && [ "$(cat "$out/membrane-controlplane.key" 2>/dev/null)" = "$key" ]; then
  echo "build.sh: membrane-controlplane ${k8s_version} cached in $out" >&2
else
  echo "build.sh: building membrane-controlplane (k8s ${k8s_version}); the first build takes many minutes" >&2
  start=$(date +%s)
  # The version the API server reports (kubectl version, helm's Capabilities) is stamped at link time, as
  # Kubernetes' own hack/lib/version.sh does; without it the server says v0.0.0-master.
  minor="$(echo "$k8s_version" | cut -d. -f2)"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=${k8s_version} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor}"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  go build -trimpath -ldflags "$ldflags" -o "$out/membrane-controlplane.tmp" .
  mv "$out/membrane-controlplane.tmp" "$out/membrane-controlplane"
  echo "$key" >"$out/membrane-controlplane.key"
  echo "build.sh: membrane-controlplane built in $(($(date +%s) - start))s" >&2
fi

# helm does not depend on the control plane's sources: one build per helm version, linked into each dir.
exec 8>"$helm_dir/.build.lock"
flock 8
if [ -x "$helm_dir/helm" ] && [ "$(cat "$helm_dir/helm.key" 2>/dev/null)" = "$helm_version" ]; then
  echo "build.sh: helm ${helm_version} cached in $helm_dir" >&2
else
  echo "build.sh: building helm ${helm_version}" >&2
  start=$(date +%s)
  # Outside this module (helm has its own go.mod and no replace lines), so `go install pkg@version` works.
  (cd / && GOBIN="$helm_dir" GOFLAGS=-buildvcs=false go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@${helm_version}")
  echo "$helm_version" >"$helm_dir/helm.key"
  echo "build.sh: helm built in $(($(date +%s) - start))s" >&2
fi
ln -sfn "$helm_dir/helm" "$out/helm"

echo "$out"
