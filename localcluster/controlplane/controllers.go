// The controllers of the local control plane: kube-scheduler and kube-controller-manager, each a child
// process of this binary with its own client certificate, started once the API server is ready and
// restarted if they exit (as a kubelet restarts a static pod: leader election makes a lost lease an exit).
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	schedulerName         = "kube-scheduler"
	controllerManagerName = "kube-controller-manager"
)

// disabledControllers cannot work on nodes that have no kubelet (the local nodes are network namespaces
// with a stand-in that posts no heartbeats): node-lifecycle-controller would mark every node NotReady
// after the grace period and taint it unreachable, and taint-eviction-controller would then delete the
// pods on it. Neither has anything to do while no kubelet runs.
var disabledControllers = []string{"node-lifecycle-controller", "taint-eviction-controller"}

// kubeconfigPath is where the local cluster's TypeScript side writes each component's kubeconfig.
func kubeconfigPath(certDir, component string) string {
	return filepath.Join(certDir, component+".kubeconfig")
}

func schedulerArgs(certDir string) []string {
	kubeconfig := kubeconfigPath(certDir, schedulerName)
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		// No HTTPS endpoint: parallel local clusters would fight over the default port, and nothing probes it.
		"--secure-port=0",
		"--leader-elect=true",
		"--profiling=false",
	}
}

func controllerManagerArgs(certDir, dir string) []string {
	kubeconfig := kubeconfigPath(certDir, controllerManagerName)
	cert := func(name string) string { return filepath.Join(certDir, name) }
	controllers := "*"
	for _, c := range disabledControllers {
		controllers += ",-" + c
	}
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--secure-port=0",
		"--leader-elect=true",
		"--profiling=false",
		"--controllers=" + controllers,
		// Each controller acts as its own ServiceAccount (kubeadm's setting): RBAC gives each only its role.
		"--use-service-account-credentials=true",
		// The same key the API server signs ServiceAccount tokens with (legacy token Secrets).
		"--service-account-private-key-file=" + cert("sa.key"),
		// Published to every namespace as the kube-root-ca.crt ConfigMap.
		"--root-ca-file=" + cert("ca.crt"),
		// CertificateSigningRequests (kubelet client certificates) are signed by the cluster CA.
		"--cluster-signing-cert-file=" + cert("ca.crt"),
		"--cluster-signing-key-file=" + cert("ca.key"),
		// Its default, /usr/libexec/kubernetes/kubelet-plugins/volume/exec, is created on the host when missing.
		"--flex-volume-plugin-dir=" + filepath.Join(dir, "flexvolume"),
	}
}

type child struct {
	name    string
	args    []string
	logFile string
}

// supervisor runs the children until stop(); all its process handling happens on one locked OS thread
// so that Pdeathsig (the kernel's "parent thread died" signal) fires only when this process dies.
type supervisor struct {
	ctx     context.Context
	cancel  context.CancelFunc
	mu      sync.Mutex
	running map[string]*os.Process
	done    sync.WaitGroup
}

func startControllers(certDir, dir string) *supervisor {
	ctx, cancel := context.WithCancel(context.Background())
	s := &supervisor{ctx: ctx, cancel: cancel, running: map[string]*os.Process{}}
	children := []child{
		{schedulerName, schedulerArgs(certDir), filepath.Join(dir, schedulerName+".log")},
		{controllerManagerName, controllerManagerArgs(certDir, dir), filepath.Join(dir, controllerManagerName+".log")},
	}
	for _, c := range children {
		s.done.Add(1)
		go s.keepRunning(c, kubeconfigPath(certDir, c.name))
	}
	return s
}

// keepRunning waits for the API server to be ready for this child's identity, runs the child, and
// starts it again (after a pause) whenever it exits, until stop().
func (s *supervisor) keepRunning(c child, kubeconfig string) {
	defer s.done.Done()
	runtime.LockOSThread() // never unlocked: the thread dies with the goroutine, after the last child
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "membrane-controlplane: %s: %v\n", c.name, err)
		return
	}
	if !waitReady(s.ctx, kubeconfig) {
		return
	}
	for restarts := 0; s.ctx.Err() == nil; restarts++ {
		log, err := os.OpenFile(c.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintf(os.Stderr, "membrane-controlplane: %s: %v\n", c.name, err)
			return
		}
		cmd := exec.Command(self, append([]string{c.name}, c.args...)...)
		cmd.Stdout, cmd.Stderr = log, log
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			log.Close()
			fmt.Fprintf(os.Stderr, "membrane-controlplane: %s: %v\n", c.name, err)
			return
		}
		s.mu.Lock()
		s.running[c.name] = cmd.Process
		s.mu.Unlock()
		fmt.Fprintf(os.Stderr, "membrane-controlplane: %s started (pid %d, restarts %d, log %s)\n", c.name, cmd.Process.Pid, restarts, c.logFile)
		err = cmd.Wait()
		log.Close()
		s.mu.Lock()
		delete(s.running, c.name)
		s.mu.Unlock()
		if s.ctx.Err() != nil {
			return
		}
		fmt.Fprintf(os.Stderr, "membrane-controlplane: %s exited (%v); restarting in 2s, log %s\n", c.name, err, c.logFile)
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

// stop sends every running child SIGTERM (SIGKILL after 10 s) and waits for them.
func (s *supervisor) stop() {
	s.cancel()
	s.mu.Lock()
	for _, p := range s.running {
		_ = p.Signal(syscall.SIGTERM)
	}
	procs := make([]*os.Process, 0, len(s.running))
	for _, p := range s.running {
		procs = append(procs, p)
	}
	s.mu.Unlock()
	waited := make(chan struct{})
	go func() {
		s.done.Wait()
		close(waited)
	}()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		for _, p := range procs {
			_ = p.Kill()
		}
		<-waited
	}
}

// waitReady polls /readyz with the child's own credentials until it answers ok (false: stopped first).
func waitReady(ctx context.Context, kubeconfig string) bool {
	for ctx.Err() == nil {
		if cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig); err == nil {
			if client, err := kubernetes.NewForConfig(cfg); err == nil {
				probe, cancel := context.WithTimeout(ctx, 5*time.Second)
				body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(probe)
				cancel()
				if err == nil && string(body) == "ok" {
					return true
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	return false
}
