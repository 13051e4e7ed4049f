package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/wait"
)

// cpuPeriod is the CFS period the limit is enforced over: the kubelet's (and the kernel's) default.
const cpuPeriod = 100 * time.Millisecond

// cpuLimit is a CPU cgroup that holds a process to a limit as a container's resources.limits.cpu does:
// a CFS quota per 100 ms period. Go derives GOMAXPROCS from that quota at start (Go 1.25 and later), so a
// process started inside it sees what it would see in a Pod.
type cpuLimit struct {
	// dir is the cgroup's directory; the process is moved in by writing its PID to procs.
	dir, procs string
	// v1 says dir is in the cgroup v1 cpu hierarchy (cpu.cfs_quota_us), not a cgroup v2 one (cpu.max).
	v1 bool
}

// newCPULimit creates a cgroup named name limited to limit (a Kubernetes quantity, "500m"): a cgroup v2
// one when the unified hierarchy offers the cpu controller, else one in the cgroup v1 cpu hierarchy.
func newCPULimit(name, limit string) (*cpuLimit, error) {
	q, err := resource.ParseQuantity(limit)
	if err != nil {
		return nil, fmt.Errorf("parse CPU limit %q: %w", limit, err)
	}
	quota := q.MilliValue() * cpuPeriod.Microseconds() / 1000
	if quota < 1000 {
		return nil, fmt.Errorf("CPU limit %q is below the kernel's least quota, 1 ms per period", limit)
	}
	for _, root := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		ctl, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
		if err != nil || !strings.Contains(" "+strings.TrimSpace(string(ctl))+" ", " cpu ") {
			continue
		}
		l := &cpuLimit{dir: filepath.Join(root, name)}
		l.procs = filepath.Join(l.dir, "cgroup.procs")
		if err := os.Mkdir(l.dir, 0o755); err != nil {
			return nil, fmt.Errorf("create cgroup: %w", err)
		}
		if err := l.write("cpu.max", fmt.Sprintf("%d %d", quota, cpuPeriod.Microseconds())); err != nil {
			return nil, errors.Join(err, l.remove())
		}
		return l, nil
	}
	root := "/sys/fs/cgroup/cpu"
	if _, err := os.Stat(filepath.Join(root, "cpu.cfs_quota_us")); err != nil {
		return nil, fmt.Errorf("no writable CPU cgroup (neither cgroup v2 with the cpu controller nor the v1 cpu hierarchy): %w", err)
	}
	l := &cpuLimit{dir: filepath.Join(root, name), v1: true}
	l.procs = filepath.Join(l.dir, "cgroup.procs")
	if err := os.Mkdir(l.dir, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	if err := errors.Join(l.write("cpu.cfs_period_us", strconv.FormatInt(cpuPeriod.Microseconds(), 10)),
		l.write("cpu.cfs_quota_us", strconv.FormatInt(quota, 10))); err != nil {
		return nil, errors.Join(err, l.remove())
	}
	return l, nil
}

func (l *cpuLimit) write(file, value string) error {
	if err := os.WriteFile(filepath.Join(l.dir, file), []byte(value), 0o644); err != nil {
		return fmt.Errorf("write %s of cgroup %s: %w", file, l.dir, err)
	}
	return nil
}

// throttling returns the periods the cgroup's processes used their whole quota in, of the periods they
// ran in, and the time they were held back for it, since the cgroup was made.
func (l *cpuLimit) throttling() (throttled, periods int64, held time.Duration, err error) {
	b, err := os.ReadFile(filepath.Join(l.dir, "cpu.stat"))
	if err != nil {
		return 0, 0, 0, fmt.Errorf("read cpu.stat: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "nr_periods":
			periods = v
		case "nr_throttled":
			throttled = v
		case "throttled_time": // v1, ns
			held = time.Duration(v)
		case "throttled_usec": // v2
			held = time.Duration(v) * time.Microsecond
		}
	}
	return throttled, periods, held, nil
}

// remove deletes the cgroup, once every process in it has ended: a cgroup with processes cannot go.
func (l *cpuLimit) remove() error {
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) {
			last = os.Remove(l.dir)
			return last == nil, nil
		})
	if err != nil {
		return fmt.Errorf("remove cgroup %s: %w", l.dir, errors.Join(err, last))
	}
	return nil
}

// String says what limit the cgroup sets, and where.
func (l *cpuLimit) String() string {
	file := "cpu.max"
	if l.v1 {
		file = "cpu.cfs_quota_us"
	}
	b, _ := os.ReadFile(filepath.Join(l.dir, file))
	return fmt.Sprintf("%s = %s", filepath.Join(l.dir, file), strings.TrimSpace(string(b)))
}

// loadAverage returns the machine's load average over the last minute, which every timing figure needs
// beside it: on a loaded machine the figures are not the webhook's.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "unknown"
}

// reportErr reports a failure to clean up on stderr: the benchmark's figures stand anyway.
func reportErr(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
	}
}

// ms formats d in milliseconds, to a hundredth.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1e3)
}

// wrapBinary returns an executable that runs binary with its arguments inside limit (when set) and with
// env added to its environment, so that the process runs inside the limit from its first instruction, as
// a container's does: the Go runtime reads the quota at start and then about once a second.
func wrapBinary(binary string, limit *cpuLimit, env []string) (string, error) {
	if limit == nil && len(env) == 0 {
		return binary, nil
	}
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	suffix := "-env"
	if limit != nil {
		fmt.Fprintf(&b, "echo $$ > %s || exit 1\n", limit.procs)
		suffix = "-" + filepath.Base(limit.dir)
	}
	b.WriteString("exec env")
	for _, e := range env {
		b.WriteString(" " + strconv.Quote(e))
	}
	fmt.Fprintf(&b, " %s \"$@\"\n", binary)
	script := binary + suffix
	if err := os.WriteFile(script, []byte(b.String()), 0o755); err != nil {
		return "", fmt.Errorf("write wrapper: %w", err)
	}
	return script, nil
}

// printThrottling prints how often the processes of l were held back by its quota since it was made.
func printThrottling(name, limit string, l *cpuLimit) {
	throttled, periods, held, err := l.throttling()
	if err != nil {
		reportErr(err)
		return
	}
	fmt.Printf("\n%s at a CPU limit of %s (%s): throttled in %d of %d CFS periods (%.1f%%), held back %s in all\n", name, limit, l,
		throttled, periods, 100*float64(throttled)/float64(max(periods, 1)), held.Round(time.Millisecond))
}
