// Command bench is the load program of `make bench`: it runs a real kube-apiserver and etcd (envtest, from
// the binaries `make controlplane` builds), the pullsecret-injector binary built from this tree, and the
// no-op webhook in test/bench/noopwebhook, and prints what Pod admission and copy fan-out cost. It reports
// numbers; it never fails on them.
//
//	go run ./test/bench admission [flags]   # the cost of one admission, against a no-op webhook and the policy
//	go run ./test/bench scale [flags]       # memory, readiness and rotation with many copies
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	switch os.Args[1] {
	case "admission":
		err = runAdmission(ctx, os.Args[2:])
	case "scale":
		err = runScale(ctx, os.Args[2:])
	default:
		usage()
	}
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: bench admission|scale [flags]  (bench <command> -h lists the flags)")
	os.Exit(2)
}

// buildNoop builds the no-op webhook into dir.
func buildNoop(dir string) (string, error) {
	out := filepath.Join(dir, "noopwebhook")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./test/bench/noopwebhook")
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build noopwebhook: %w\n%s", err, b)
	}
	return out, nil
}
