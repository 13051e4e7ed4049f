// Command pullsecret-injector is a mutating admission webhook that copies registry pull secrets into the
// namespaces of Pods that need them and adds them to the Pods' imagePullSecrets. main reads the command
// line, sets the logger and the garbage collector's start-up target, and hands the rest to internal/app.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/pullsecret-injector/pullsecret-injector/internal/app"
	"github.com/pullsecret-injector/pullsecret-injector/internal/checkcmd"
	"github.com/pullsecret-injector/pullsecret-injector/internal/version"
)

// defaultGCPercent is the binary's GOGC unless the environment sets one. Its live heap is mostly the
// metadata cache, which changes little, so halving the runtime's default headroom (100) costs little CPU
// and keeps the RSS about 5 MiB lower with 1,000 copies (docs/performance.md has the measurements).
const defaultGCPercent = 50

// startupGCPercent is the binary's GOGC while its caches make their first list, unless the environment
// sets one: the list's decoding garbage (every object arrives whole, with its managed fields, and is
// trimmed) would otherwise let the heap grow to half again the caches' size, the highest the process
// ever holds. Collecting more often costs CPU only while the list lasts (docs/performance.md).
const startupGCPercent = 10

func main() {
	// The check subcommand has flags of its own and must never start the webhook.
	if len(os.Args) > 1 && os.Args[1] == "check" {
		os.Exit(checkcmd.Main(os.Args[2:], os.Stdout, os.Stderr))
	}
	cachesSynced := startupGC()
	o := parseFlags(os.Args[1:])
	if o.ShowVersion {
		fmt.Println(version.String())
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.Zap)))
	var draining atomic.Bool
	if err := app.Run(signalContext(o.ShutdownDelay, &draining), o, &draining, cachesSynced); err != nil {
		ctrl.Log.WithName("setup").Error(err, "Cannot run")
		os.Exit(1)
	}
}

// parseFlags parses args into the process's options, and exits with the usage on an error or --help.
func parseFlags(args []string) app.Options {
	var o app.Options
	fs := flag.NewFlagSet("pullsecret-injector", flag.ExitOnError)
	o.BindFlags(fs)
	fs.Usage = func() { o.Usage(fs, fs.Output()) }
	_ = fs.Parse(args) // ExitOnError: an error exits
	return o
}

// startupGC sets GOGC to startupGCPercent for the caches' first list, unless the environment sets GOGC,
// and returns what restores defaultGCPercent once they have synced (nil when the environment decides).
func startupGC() func() {
	if _, set := os.LookupEnv("GOGC"); set {
		return nil
	}
	debug.SetGCPercent(startupGCPercent)
	return func() {
		debug.SetGCPercent(defaultGCPercent)
		// What the first list left free goes back to the kernel now, not over the next minutes.
		debug.FreeOSMemory()
	}
}

// signalContext returns a context that ends shutdownDelay after the first SIGTERM or interrupt, and sets
// draining at the signal. In between, the process keeps serving admissions but reports not ready: the
// Service's endpoints and the API server's connections take a moment to move to other replicas, and a
// listener that closed at once would refuse their requests, which failurePolicy Fail turns into refused
// Pods. A second signal ends the context at once, and a third exits.
func signalContext(shutdownDelay time.Duration, draining *atomic.Bool) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	c := make(chan os.Signal, 3)
	signal.Notify(c, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-c
		draining.Store(true)
		ctrl.Log.WithName("setup").Info("Shutting down: not ready, still serving admissions for the shutdown delay",
			"shutdownDelay", shutdownDelay.String())
		select {
		case <-time.After(shutdownDelay):
		case <-c:
		}
		cancel()
		<-c
		os.Exit(1)
	}()
	return ctx
}
