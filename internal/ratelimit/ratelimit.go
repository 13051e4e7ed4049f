// Package ratelimit paces the reconciler's requests to the API server's health: a client-go rate limiter
// whose rate grows while the API server answers the reconciler's writes as fast as it did when it was
// least loaded, and shrinks when it answers them slower or refuses them with 429 Too Many Requests
// (additive increase, multiplicative decrease), between a floor and the configured rate. The admission
// path has a client of its own and is not paced: a rotation that fans out to every copy yields to
// admissions instead of slowing them.
package ratelimit

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/client-go/util/flowcontrol"
)

const (
	// window is how often the rate is decided on, from the writes answered since the last decision.
	window = time.Second
	// minSamples is the fewest writes a latency decision is made on; a window with fewer waits for more,
	// up to maxWindow.
	minSamples = 10
	maxWindow  = 5 * time.Second
	// baselineRise is how far the baseline moves toward a window's median that is above it: it follows the
	// lowest medians at once and an API server that became slower for good within about 30 windows of
	// writes, so that the noise of single windows does not pull it down for long.
	baselineRise = 1.0 / 32
	// slowFactor is how much slower than the baseline the median write may be before the rate shrinks. A
	// write that waits for CPU on the API server means every request waits, admissions included.
	slowFactor = 1.5
	// slowDecrease and throttledDecrease multiply the rate on a slow window and on a window with a 429.
	slowDecrease      = 0.75
	throttledDecrease = 0.5
	// increaseShare of the configured rate is added per window in which requests waited for the limiter
	// and the API server kept up; until the first slow or throttled window the rate doubles instead.
	increaseShare = 0.05
	// floorShare of the configured rate, and at least one request per second, is the lowest rate: a
	// rotation must still end in minutes on a busy API server (at 20 a second, 10,000 copies take 8 minutes),
	// because the registry may refuse the old credentials soon after it.
	floorShare = 0.2
	// burstTime is how many seconds of the current rate the limiter lets through at once, at most the
	// configured burst: a large burst at the start of a rotation is the load this package exists to avoid.
	burstTime = 0.1
	// maxSamples bounds the latencies kept for one window: beyond it every other one is dropped.
	maxSamples = 512
)

// Decision is what one window decided.
type Decision string

// The decisions of a window, the values of the observer's reason.
const (
	// Throttled: the API server answered 429 (or 5xx): the rate halves.
	Throttled Decision = "throttled"
	// Slow: the median write took longer than slowFactor times the baseline: the rate shrinks by a quarter.
	Slow Decision = "slow"
	// Increase: requests waited for the limiter and the API server kept up: the rate grows.
	Increase Decision = "increase"
	// Hold: nothing to change.
	Hold Decision = "hold"
)

// Limiter is a flowcontrol.RateLimiter whose rate adapts; Transport feeds it the answers to the requests it
// paced. It is safe for concurrent use.
type Limiter struct {
	// max is the highest rate (requests per second) and burst the largest burst, the configured ones.
	max, floor float64
	burst      int
	lim        *rate.Limiter
	// Observe, when set, is called with every decision and the rate after it (for the metrics).
	observe func(Decision, float64)
	now     func() time.Time

	mu   sync.Mutex
	rate float64
	// starting is true until the first slow or throttled window: the rate doubles meanwhile.
	starting    bool
	windowStart time.Time
	latencies   []time.Duration
	throttled   int
	waited      bool
	// baseline is what a write takes when the API server is least loaded by the reconciler: see baselineRise.
	baseline time.Duration
}

// New returns a Limiter that allows up to qps requests per second, with bursts of up to burst (and of
// burstTime at the current rate). It starts at its floor and doubles its rate each window until the API
// server answers slower. observe, when not nil, is called with each window's decision and the
// rate after it.
func New(qps float64, burst int, observe func(Decision, float64)) *Limiter {
	return newLimiter(qps, burst, observe, time.Now)
}

func newLimiter(qps float64, burst int, observe func(Decision, float64), now func() time.Time) *Limiter {
	floor := max(qps*floorShare, min(1, qps))
	l := &Limiter{
		max:     qps,
		floor:   floor,
		burst:   max(burst, 1),
		observe: observe,
		now:     now,
		// The floor: the first writes, at a rate that loads the API server little, set the baseline.
		rate:     floor,
		starting: true,
	}
	l.lim = rate.NewLimiter(rate.Limit(l.rate), l.burstLocked())
	l.windowStart = now()
	if observe != nil {
		observe(Hold, l.rate)
	}
	return l
}

// burstLocked is the burst at the current rate.
func (l *Limiter) burstLocked() int {
	return max(1, min(l.burst, int(l.rate*burstTime)))
}

var _ flowcontrol.RateLimiter = (*Limiter)(nil)

// TryAccept implements flowcontrol.RateLimiter.
func (l *Limiter) TryAccept() bool { return l.lim.AllowN(l.now(), 1) }

// Accept implements flowcontrol.RateLimiter.
func (l *Limiter) Accept() { _ = l.Wait(context.Background()) }

// Stop implements flowcontrol.RateLimiter.
func (l *Limiter) Stop() {}

// QPS implements flowcontrol.RateLimiter: the current rate.
func (l *Limiter) QPS() float32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return float32(l.rate)
}

// Wait implements flowcontrol.RateLimiter. A caller that has to wait tells the limiter that the rate, not
// the work, is what bounds the requests: only then may the rate grow.
func (l *Limiter) Wait(ctx context.Context) error {
	r := l.lim.ReserveN(l.now(), 1)
	if !r.OK() {
		return l.lim.Wait(ctx) // a burst of 0; cannot happen with New
	}
	delay := r.DelayFrom(l.now())
	if delay <= 0 {
		return nil
	}
	l.mu.Lock()
	l.waited = true
	l.mu.Unlock()
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.Cancel()
		return ctx.Err()
	}
}

// Transport returns next wrapped so that every answer to a request it sends is reported to the limiter:
// the latency of writes, and 429 and 5xx answers to any request. Use it as the rest.Config's WrapTransport
// of the client whose RateLimiter is l.
func (l *Limiter) Transport(next http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		start := l.now()
		resp, err := next.RoundTrip(req)
		if err == nil {
			l.Answered(req.Method, l.now().Sub(start), resp.StatusCode)
		}
		return resp, err
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// Answered records the answer to one request: its method, how long the API server took and its status.
func (l *Limiter) Answered(method string, latency time.Duration, status int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case status == http.StatusTooManyRequests || status >= http.StatusInternalServerError:
		l.throttled++
	case method != http.MethodGet && method != http.MethodHead && status < http.StatusBadRequest:
		if len(l.latencies) >= maxSamples {
			// Keep every other one: the median of what is left is still the window's.
			n := 0
			for i := 0; i < len(l.latencies); i += 2 {
				l.latencies[n] = l.latencies[i]
				n++
			}
			l.latencies = l.latencies[:n]
		}
		l.latencies = append(l.latencies, latency)
	}
	l.decideLocked(now)
}

// decideLocked ends the window when it is due and sets the rate from it.
func (l *Limiter) decideLocked(now time.Time) {
	elapsed := now.Sub(l.windowStart)
	if elapsed < window || (l.throttled == 0 && len(l.latencies) < minSamples && elapsed < maxWindow) {
		return
	}
	d := Hold
	var median time.Duration
	if len(l.latencies) >= minSamples {
		slices.Sort(l.latencies)
		median = l.latencies[len(l.latencies)/2]
	}
	baseline := l.baseline
	switch {
	case l.throttled > 0:
		d, l.starting = Throttled, false
		l.rate = max(l.floor, l.rate*throttledDecrease)
	case median > 0 && baseline > 0 && float64(median) > slowFactor*float64(baseline):
		d, l.starting = Slow, false
		l.rate = max(l.floor, l.rate*slowDecrease)
	case l.waited && l.rate < l.max && l.starting:
		d = Increase
		l.rate = min(l.max, l.rate*2)
	case l.waited && l.rate < l.max:
		d = Increase
		l.rate = min(l.max, l.rate+l.max*increaseShare)
	}
	switch {
	case median == 0:
	case l.baseline == 0 || median < l.baseline:
		l.baseline = median
	default:
		l.baseline += time.Duration(float64(median-l.baseline) * baselineRise)
	}
	if d != Hold {
		l.lim.SetLimitAt(now, rate.Limit(l.rate))
		l.lim.SetBurstAt(now, l.burstLocked())
	}
	l.windowStart, l.latencies, l.throttled, l.waited = now, l.latencies[:0], 0, false
	if l.observe != nil {
		l.observe(d, l.rate)
	}
}
