// membrane-controlplane: an embedded etcd plus an in-process kube-apiserver, both on 127.0.0.1 only,
// and (with --controllers) kube-scheduler and kube-controller-manager as child processes of the same
// binary (`membrane-controlplane kube-scheduler …`, as hyperkube did), supervised and stopped with it.
// `membrane-controlplane kubelet …` is a real node's kubelet (localcluster/realnode starts it, not this binary).
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as the upstream mains register them
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	kcm "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
	_ "time/tzdata" // CronJob time zones, as kube-controller-manager's main
)

const (
	loopback    = "127.0.0.1"
	kubeletName = "kubelet"
)

func main() {
	// Multi-call: the supervised children are this same binary with the component's name first.
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case schedulerName:
			os.Args = append([]string{os.Args[0]}, os.Args[2:]...)
			os.Exit(cli.Run(scheduler.NewSchedulerCommand()))
		case controllerManagerName:
			os.Args = append([]string{os.Args[0]}, os.Args[2:]...)
			os.Exit(cli.Run(kcm.NewControllerManagerCommand()))
		case kubeletName:
			os.Args = append([]string{os.Args[0]}, os.Args[2:]...)
			os.Exit(cli.Run(kubelet.NewKubeletCommand(context.Background())))
		}
	}

	dataDir := flag.String("data-dir", "", "directory for etcd data (required)")
	certDir := flag.String("cert-dir", "", "directory holding ca.crt, apiserver.crt/.key, sa.key, sa.pub (required)")
	securePort := flag.Int("secure-port", 0, "kube-apiserver HTTPS port on 127.0.0.1 (required)")
	etcdClientPort := flag.Int("etcd-client-port", 0, "etcd client port on 127.0.0.1 (0: pick a free one)")
	etcdPeerPort := flag.Int("etcd-peer-port", 0, "etcd peer port on 127.0.0.1 (0: pick a free one)")
	exitWithParent := flag.Bool("exit-with-parent", false, "shut down when the parent process dies (for tests)")
	controllers := flag.Bool("controllers", false, "also run kube-scheduler and kube-controller-manager (kubeconfigs in --cert-dir, files in --controllers-dir)")
	controllersDir := flag.String("controllers-dir", "", "where the controllers keep their logs and files (required with --controllers)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s --data-dir D --cert-dir C --secure-port P [-- extra kube-apiserver flags]\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if *dataDir == "" || *certDir == "" || *securePort <= 0 || (*controllers && *controllersDir == "") {
		flag.Usage()
		os.Exit(2)
	}

	if *exitWithParent {
		go shutDownWhenOrphaned()
	}
	etcd, err := startEtcd(*dataDir, *etcdClientPort, *etcdPeerPort)
	if err != nil {
		fmt.Fprintf(os.Stderr, "membrane-controlplane: etcd: %v\n", err)
		os.Exit(1)
	}
	// kube-apiserver owns signal handling (SIGTERM cancels its context); etcd stops after it returns.
	cmd := app.NewAPIServerCommand()
	cmd.SetArgs(append(apiserverArgs(*certDir, *securePort, etcd.Clients[0].Addr().String()), flag.Args()...))
	var children *supervisor
	if *controllers {
		children = startControllers(*certDir, *controllersDir)
	}
	runErr := cmd.Execute()
	// The controllers stop before the API server's storage goes away.
	if children != nil {
		children.stop()
	}
	etcd.Close()
	if runErr != nil {
		fmt.Fprintf(os.Stderr, "membrane-controlplane: kube-apiserver: %v\n", runErr)
		os.Exit(1)
	}
}

func apiserverArgs(certDir string, securePort int, etcdAddr string) []string {
	cert := func(name string) string { return filepath.Join(certDir, name) }
	args := []string{
		"--bind-address=" + loopback,
		"--advertise-address=" + loopback,
		// The "kubernetes" Service endpoints cannot hold a loopback address; nothing in-cluster needs them.
		"--endpoint-reconciler-type=none",
		"--secure-port=" + strconv.Itoa(securePort),
		"--etcd-servers=http://" + etcdAddr,
		"--tls-cert-file=" + cert("apiserver.crt"),
		"--tls-private-key-file=" + cert("apiserver.key"),
		"--client-ca-file=" + cert("ca.crt"),
		"--authorization-mode=Node,RBAC",
		"--anonymous-auth=false",
		"--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass," +
			"ResourceQuota,NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook," +
			"ValidatingAdmissionPolicy,MutatingAdmissionPolicy",
		"--service-account-key-file=" + cert("sa.pub"),
		"--service-account-signing-key-file=" + cert("sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--api-audiences=https://kubernetes.default.svc",
		"--service-cluster-ip-range=10.96.0.0/16",
		"--allow-privileged=true",
		"--profiling=false",
		"--cert-dir=" + certDir,
	}
	// kubectl logs/exec/port-forward reach a real node's kubelet (localcluster/realnode) as this client, by
	// the node's InternalIP (its hostname resolves nowhere). Control-plane dirs made before the certificate
	// existed start without it.
	if _, err := os.Stat(cert("apiserver-kubelet-client.crt")); err == nil {
		args = append(args,
			"--kubelet-client-certificate="+cert("apiserver-kubelet-client.crt"),
			"--kubelet-client-key="+cert("apiserver-kubelet-client.key"),
			"--kubelet-preferred-address-types=InternalIP,Hostname")
	}
	return args
}

func startEtcd(dataDir string, clientPort, peerPort int) (*embed.Etcd, error) {
	var err error
	if clientPort == 0 {
		if clientPort, err = freeLoopbackPort(); err != nil {
			return nil, err
		}
	}
	if peerPort == 0 {
		if peerPort, err = freeLoopbackPort(); err != nil {
			return nil, err
		}
	}
	clientURL := url.URL{Scheme: "http", Host: net.JoinHostPort(loopback, strconv.Itoa(clientPort))}
	peerURL := url.URL{Scheme: "http", Host: net.JoinHostPort(loopback, strconv.Itoa(peerPort))}

	cfg := embed.NewConfig()
	cfg.Name = "membrane"
	cfg.Dir = dataDir
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.Name + "=" + peerURL.String()
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{"stderr"}

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, err
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("not ready after 60s")
	}
}

// shutDownWhenOrphaned sends this process SIGTERM (a graceful stop) once its parent is gone, so a
// crashed test runner does not leave a control plane behind.
func shutDownWhenOrphaned() {
	parent := os.Getppid()
	for range time.Tick(time.Second) {
		if os.Getppid() != parent {
			_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
			return
		}
	}
}

// freeLoopbackPort asks the kernel for an unused port; the tiny race until etcd binds it is accepted.
func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(loopback, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
