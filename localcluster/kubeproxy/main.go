// kube-proxy for the real nodes (localcluster/realnode), built from the pinned k8s.io/kubernetes module as
// upstream's cmd/kube-proxy: a module of its own so that its extra dependencies (knftables, netlink, ipvs)
// do not change the control plane's build or its cache key.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream's main registers them
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-proxy/app"
)

func main() {
	os.Exit(cli.Run(app.NewProxyCommand()))
}
