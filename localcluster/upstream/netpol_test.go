// The upstream e2e suite's entry point with only its NetworkPolicy specs linked in: the framework, its flags and
// its suite setup are upstream's (test/e2e.RunE2ETests); what is left out is every other SIG's specs, which would
// make the binary several times larger and slower to build without adding a NetworkPolicy test.
package upstream

import (
	"flag"
	"os"
	"testing"

	"k8s.io/kubernetes/test/e2e"
	"k8s.io/kubernetes/test/e2e/framework"
	"k8s.io/kubernetes/test/e2e/framework/config"
	"k8s.io/kubernetes/test/e2e/framework/testfiles"
	e2etestingmanifests "k8s.io/kubernetes/test/e2e/testing-manifests"

	_ "k8s.io/kubernetes/test/e2e/feature" // freezes the feature names before the specs use them

	_ "k8s.io/kubernetes/test/e2e/network/netpol" // [sig-network] Netpol, Netpol [LinuxOnly], Netpol API

	_ "k8s.io/kubernetes/test/e2e/framework/debug/init" // dumps of failed namespaces, as in e2e.test
	_ "k8s.io/kubernetes/test/e2e/framework/node/init"
)

func TestMain(m *testing.M) {
	config.CopyFlags(config.Flags, flag.CommandLine)
	framework.RegisterCommonFlags(flag.CommandLine)
	framework.RegisterClusterFlags(flag.CommandLine)
	flag.Parse()
	testfiles.AddFileSource(e2etestingmanifests.GetE2ETestingManifestsFS())
	framework.AfterReadingAllFlags(&framework.TestContext)
	os.Exit(m.Run())
}

func TestE2E(t *testing.T) {
	e2e.RunE2ETests(t)
}
