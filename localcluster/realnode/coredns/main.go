// CoreDNS for the real-node cluster with only the plugins its Corefile (../coredns.ts corefile()) uses, so a cold
// build downloads CoreDNS's core and client-go rather than every upstream plugin's SDKs (route53, azure, clouddns,
// dnstap, tracing …). Built by ../coredns-image.sh; a Corefile directive missing here fails at start with
// "unknown directive", and coredns.test.ts checks the list against corefile().
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/ready"
)

// directives is CoreDNS's plugin.cfg order (the order a query passes the plugins), cut to the plugins imported above.
var directives = []string{
	"ready",
	"health",
	"errors",
	"loadbalance",
	"cache",
	"kubernetes",
}

func main() {
	dnsserver.Directives = directives
	coremain.Run()
}
