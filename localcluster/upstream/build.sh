#!/usr/bin/env bash
# Builds the upstream e2e suite's NetworkPolicy test binary (netpol_test.go: upstream's framework and test/e2e/network/
# netpol from the pinned k8s.io/kubernetes module, the control plane's version and replace block), cached by content
# hash outside the tree like kube-proxy. Progress goes to stderr; the last line on stdout is the directory holding
# e2e-netpol.test.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

k8s_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == "k8s.io/kubernetes" { print $3; exit }' go.mod)"
[ -n "$k8s_version" ] || { echo "upstream/build.sh: no k8s.io/kubernetes version in $here/go.mod" >&2; exit 1; }
cp_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' ../controlplane/go.mod)"
[ "$k8s_version" = "$cp_version" ] || { echo "upstream/build.sh: k8s.io/kubernetes $k8s_version here, $cp_version in the control plane: pin the same" >&2; exit 1; }
cache="${MEMBRANE_CACHE:-$HOME/.cache/membrane}"
key="$(cat go.mod go.sum ./*.go build.sh | sha256sum | cut -d' ' -f1)"
out="$cache/e2e-netpol-${k8s_version}-${key:0:16}"
mkdir -p "$out"
exec 9>"$out/.build.lock"
flock 9
if [ -x "$out/e2e-netpol.test" ] && [ "$(cat "$out/e2e-netpol.test.key" 2>/dev/null)" = "$key" ]; then
  echo "upstream/build.sh: e2e-netpol.test ${k8s_version} cached in $out" >&2
  echo "$out"
  exit 0
fi
echo "upstream/build.sh: building e2e-netpol.test (k8s ${k8s_version}; cold: many minutes)" >&2
start=$(date +%s)
# The version the suite reports and compares with the server's, stamped as the control plane's is.
minor="$(echo "$k8s_version" | cut -d. -f2)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=${k8s_version} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor}"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
# -vet=off: vet is a check of our own code, and this package is only the entry point.
GOFLAGS=-buildvcs=false go test -c -vet=off -mod=readonly -trimpath -ldflags "$ldflags" -o "$out/e2e-netpol.test.tmp" .
mv "$out/e2e-netpol.test.tmp" "$out/e2e-netpol.test"
echo "$key" >"$out/e2e-netpol.test.key"
echo "upstream/build.sh: e2e-netpol.test built in $(($(date +%s) - start))s" >&2
echo "$out"
