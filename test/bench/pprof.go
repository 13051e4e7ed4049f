package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// pprofSource is added to the project's main package, for the benchmark's build only (go build -overlay):
// the released binary serves no pprof endpoint and never samples blocking. It serves net/http/pprof on
// loopback and records every blocking event of more than blockRate ns and one mutex contention in
// mutexFraction.
const pprofSource = `package main

import (
	"net/http"
	_ "net/http/pprof"
	"runtime"
)

func init() {
	runtime.SetBlockProfileRate(%d)
	runtime.SetMutexProfileFraction(%d)
	go func() { _ = http.ListenAndServe(%q, nil) }()
}
`

const (
	// blockRate records every wait on a channel, select, sync.Cond or lock longer than 10 µs, and a share of
	// the shorter ones in proportion to their length: a request's stall is tens of milliseconds.
	blockRate = 10_000
	// mutexFraction records one contended unlock in 5.
	mutexFraction = 5
)

// buildProfiled builds the project into dir with pprofSource added, serving pprof on addr.
func buildProfiled(dir, addr string) (string, error) {
	src := filepath.Join(dir, "zz_bench_pprof.go")
	if err := os.WriteFile(src, fmt.Appendf(nil, pprofSource, blockRate, mutexFraction, addr), 0o644); err != nil {
		return "", err
	}
	overlay, err := json.Marshal(map[string]map[string]string{
		"Replace": {filepath.Join(testenv.RepoRoot(), "zz_bench_pprof.go"): src},
	})
	if err != nil {
		return "", err
	}
	overlayPath := filepath.Join(dir, "pprof-overlay.json")
	if err := os.WriteFile(overlayPath, overlay, 0o644); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "pullsecret-injector-pprof")
	cmd := exec.Command("go", "build", "-trimpath", "-overlay", overlayPath, "-o", out, ".")
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build pullsecret-injector with pprof: %w\n%s", err, b)
	}
	return out, nil
}

// fetchProfile saves the profile at url to path.
func fetchProfile(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch profile %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch profile %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return fmt.Errorf("write profile %s: %w", path, err)
	}
	return f.Close()
}

// pprofTop prints the first lines of `go tool pprof -top` of profile, its growth since base when base is
// not empty, and, with cum, sorted by inclusive share.
func pprofTop(title, profile, base string, cum bool, lines int) error {
	args := []string{"tool", "pprof", "-top", "-nodecount", strconv.Itoa(lines)}
	if cum {
		args = append(args, "-cum")
	}
	if base != "" {
		args = append(args, "-base", base)
	}
	out, err := exec.Command("go", append(args, profile)...).Output()
	if err != nil {
		return fmt.Errorf("go tool pprof %s: %w", profile, err)
	}
	fmt.Printf("\n== %s (go %s) ==\n", title, strings.Join(append(args, profile), " "))
	fmt.Print(string(out))
	return nil
}

// pprofProfile records, apart from the measured rounds, the project's CPU profile while Pods are created
// at o.concurrency for d, and its block and mutex profiles over the same load, and prints their tops.
func (c *cluster) pprofProfile(ctx context.Context, o admissionOptions, project *cell, namespace, addr string) error {
	if err := c.register(ctx, project.webhook.Port, namespace); err != nil {
		return err
	}
	base := "http://" + addr + "/debug/pprof/"
	dir := o.pprofDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, p := range []string{"block", "mutex"} {
		if err := fetchProfile(ctx, base+p, filepath.Join(dir, p+".before.pb.gz")); err != nil {
			return err
		}
	}
	const d = 20 * time.Second
	loadCtx, stop := context.WithCancel(ctx)
	loadDone := make(chan error, 1)
	var pods int
	go func() {
		var err error
		for loadCtx.Err() == nil && err == nil {
			_, _, err = c.concurrent(loadCtx, namespace, 4*o.concurrency, o.concurrency, true)
			pods += 4 * o.concurrency
		}
		if loadCtx.Err() != nil {
			err = nil
		}
		loadDone <- err
	}()
	cpuPath := filepath.Join(dir, "cpu.pb.gz")
	err := fetchProfile(ctx, base+"profile?seconds="+strconv.Itoa(int(d.Seconds())), cpuPath)
	stop()
	if lerr := <-loadDone; err == nil {
		err = lerr
	}
	if err != nil {
		return err
	}
	for _, p := range []string{"block", "mutex"} {
		if err := fetchProfile(ctx, base+p, filepath.Join(dir, p+".after.pb.gz")); err != nil {
			return err
		}
	}
	fmt.Printf("\nProfiles of pullsecret-injector while %d Pods were created at c=%d, in %s:\n", pods, o.concurrency, dir)
	if err := pprofTop("CPU, inclusive", cpuPath, "", true, 40); err != nil {
		return err
	}
	if err := pprofTop("CPU, own", cpuPath, "", false, 25); err != nil {
		return err
	}
	for _, p := range []string{"block", "mutex"} {
		if err := pprofTop(p+" over the load", filepath.Join(dir, p+".after.pb.gz"), filepath.Join(dir, p+".before.pb.gz"), true, 25); err != nil {
			return err
		}
	}
	return c.deletePods(ctx, namespace)
}

// gcCycles returns the garbage collections the process whose metrics are at metricsURL has made, and
// the bytes it has allocated.
func gcCycles(ctx context.Context, metricsURL string) (int, int64, error) {
	m, err := testenv.ScrapeURL(ctx, metricsURL)
	if err != nil {
		return 0, 0, err
	}
	// A summary: its sample count is the number of collections.
	if _, ok := m["go_gc_duration_seconds"]; !ok {
		return 0, 0, fmt.Errorf("%s reports no go_gc_duration_seconds", metricsURL)
	}
	_, n := m.Value("go_gc_duration_seconds", nil)
	alloc, _ := m.Value("go_memstats_alloc_bytes_total", nil)
	return int(n), int64(alloc), nil
}
