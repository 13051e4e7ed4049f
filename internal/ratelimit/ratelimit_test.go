package ratelimit

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// clock is a fake clock for the limiter.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

// fixture is a Limiter on a fake clock that records its decisions.
type fixture struct {
	l         *Limiter
	clock     *clock
	decisions []Decision
}

// newFixture returns a limiter of qps that has started: its rate is qps and its baseline 5ms.
func newFixture(qps float64) *fixture {
	f := newStartingFixture(qps, 1)
	for f.rate() < qps {
		f.window(20, 5*time.Millisecond, true)
	}
	f.decisions = nil
	return f
}

// newStartingFixture returns a new limiter of qps and burst.
func newStartingFixture(qps float64, burst int) *fixture {
	f := &fixture{clock: &clock{t: time.Unix(1000, 0)}}
	f.l = newLimiter(qps, burst, func(d Decision, _ float64) { f.decisions = append(f.decisions, d) }, f.clock.now)
	f.decisions = nil
	return f
}

// window answers n writes of latency each over one window; with demand, a caller had to wait meanwhile.
func (f *fixture) window(n int, latency time.Duration, demand bool) {
	if demand {
		f.l.mu.Lock()
		f.l.waited = true
		f.l.mu.Unlock()
	}
	for i := range n {
		f.clock.advance(window / time.Duration(n+1))
		if i == n-1 {
			f.clock.advance(window) // the last answer ends the window
		}
		f.l.Answered(http.MethodPatch, latency, http.StatusOK)
	}
}

func (f *fixture) rate() float64 { return float64(f.l.QPS()) }

// The limiter starts low, so that its first writes load the API server little and set the baseline, and
// doubles its rate while the API server keeps up; its burst is a tenth of a second at its rate.
func TestLimiterStartsLowAndDoubles(t *testing.T) {
	f := newStartingFixture(100, 200)
	var rates []float64
	var bursts []int
	for range 6 {
		rates, bursts = append(rates, f.rate()), append(bursts, f.l.lim.Burst())
		f.window(20, 5*time.Millisecond, true)
	}
	if diff := cmp.Diff([]float64{20, 40, 80, 100, 100, 100}, rates); diff != "" {
		t.Errorf("rates (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int{2, 4, 8, 10, 10, 10}, bursts); diff != "" {
		t.Errorf("bursts (-want +got):\n%s", diff)
	}
	// Once a window was slow, the rate grows additively.
	f.window(20, 20*time.Millisecond, true)
	f.window(20, 5*time.Millisecond, true)
	if got := f.rate(); got != 80 {
		t.Errorf("rate after a slow window and a good one = %v, want 75+5", got)
	}
	// One window of noise costs one decrease, not more.
	if diff := cmp.Diff([]Decision{Increase, Increase, Increase, Hold, Hold, Hold, Slow, Increase}, f.decisions); diff != "" {
		t.Errorf("decisions (-want +got):\n%s", diff)
	}
}

func TestLimiterSlowsWhenWritesSlowDown(t *testing.T) {
	f := newFixture(100)
	f.window(20, 7*time.Millisecond, true) // within slowFactor
	f.window(20, 10*time.Millisecond, true)
	if got := f.rate(); got != 75 {
		t.Errorf("rate after a window twice as slow = %v, want 75", got)
	}
	for range 10 { // the baseline has not caught up yet: still slower than it
		f.window(20, 10*time.Millisecond, true)
	}
	if got, floor := f.rate(), 20.0; got != floor {
		t.Errorf("rate after a long slow spell = %v, want the floor %v", got, floor)
	}
	// The API server recovers: the rate grows back, by a twentieth of the maximum a window.
	for range 5 {
		f.window(20, 5*time.Millisecond, true)
	}
	if got := f.rate(); got != 45 {
		t.Errorf("rate after 5 good windows from the floor = %v, want 45", got)
	}
	for range 30 {
		f.window(20, 5*time.Millisecond, true)
	}
	if got := f.rate(); got != 100 {
		t.Errorf("rate after a long good spell = %v, want the maximum 100", got)
	}
}

func TestLimiterToleratesWhatIsWithinTheFactor(t *testing.T) {
	f := newFixture(100)
	f.window(20, 7*time.Millisecond, true) // 1.4x: within slowFactor
	f.window(20, 5*time.Millisecond, true)
	if diff := cmp.Diff([]Decision{Hold, Hold}, f.decisions); diff != "" {
		t.Errorf("decisions (-want +got):\n%s", diff)
	}
}

func TestLimiterHalvesOnThrottling(t *testing.T) {
	f := newFixture(100)
	f.clock.advance(window)
	f.l.Answered(http.MethodPatch, time.Millisecond, http.StatusTooManyRequests)
	if got := f.rate(); got != 50 {
		t.Errorf("rate after a 429 = %v, want 50", got)
	}
	f.clock.advance(window)
	f.l.Answered(http.MethodGet, time.Millisecond, http.StatusServiceUnavailable)
	if got := f.rate(); got != 25 {
		t.Errorf("rate after a 503 to a read = %v, want 25", got)
	}
}

func TestLimiterGrowsOnlyWhenItHoldsRequestsBack(t *testing.T) {
	f := newFixture(100)
	f.window(20, 50*time.Millisecond, true)
	f.window(20, 50*time.Millisecond, true)
	slowed := f.rate()
	for range 10 {
		f.window(20, 5*time.Millisecond, false)
	}
	if got := f.rate(); got != slowed {
		t.Errorf("rate without demand moved from %v to %v, want it held", slowed, got)
	}
}

func TestLimiterDecidesOnEnoughWrites(t *testing.T) {
	f := newFixture(100)
	f.clock.advance(window)
	// Reads and a few slow writes are no sign: no decision until minSamples writes or maxWindow.
	for range 50 {
		f.clock.advance(10 * time.Millisecond)
		f.l.Answered(http.MethodGet, time.Second, http.StatusOK)
	}
	for range minSamples - 1 {
		f.clock.advance(10 * time.Millisecond)
		f.l.Answered(http.MethodPatch, time.Second, http.StatusOK)
	}
	if len(f.decisions) != 0 {
		t.Errorf("decisions %v before minSamples writes, want none", f.decisions)
	}
	f.clock.advance(maxWindow)
	f.l.Answered(http.MethodPatch, time.Second, http.StatusOK)
	if diff := cmp.Diff([]Decision{Slow}, f.decisions); diff != "" {
		t.Errorf("decisions (-want +got):\n%s", diff)
	}
}

func TestLimiterBaselineFollowsALastingChange(t *testing.T) {
	f := newFixture(100)
	// The API server becomes slower for good, whatever the reconciler does: after a while that is the
	// new baseline and the rate grows back.
	for range 120 {
		f.window(20, 20*time.Millisecond, true)
	}
	if got := f.rate(); got != 100 {
		t.Errorf("rate long after a lasting slowdown = %v, want 100", got)
	}
}

func TestLimiterKeepsBoundedSamples(t *testing.T) {
	f := newFixture(100)
	for range 10 * maxSamples {
		f.l.Answered(http.MethodPatch, time.Millisecond, http.StatusOK)
	}
	if n := len(f.l.latencies); n > maxSamples {
		t.Errorf("%d latencies kept, bound %d", n, maxSamples)
	}
}

func TestLimiterWaitPacesAndHonoursCancel(t *testing.T) {
	l := New(1000, 1, nil)
	l.rate = 1000
	l.lim.SetLimit(1000)
	start := time.Now()
	for range 21 {
		if err := l.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < 15*time.Millisecond {
		t.Errorf("21 requests at 1000/s with a burst of 1 took %v, want about 20ms", d)
	}
	slow := New(0.001, 1, nil)
	_ = slow.Wait(context.Background()) // the burst
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := slow.Wait(ctx); err == nil {
		t.Error("Wait with a cancelled context returned nil")
	}
}

func TestTransportReportsAnswers(t *testing.T) {
	f := newFixture(100)
	rt := f.l.Transport(roundTripper(func(req *http.Request) (*http.Response, error) {
		f.clock.advance(5 * time.Millisecond)
		return &http.Response{StatusCode: http.StatusTooManyRequests, Body: http.NoBody, Request: req}, nil
	}))
	f.clock.advance(window)
	req, err := http.NewRequest(http.MethodPatch, "http://example.invalid/api/v1/namespaces/a/secrets/b", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if diff := cmp.Diff([]Decision{Throttled}, f.decisions); diff != "" {
		t.Errorf("decisions (-want +got):\n%s", diff)
	}
}
