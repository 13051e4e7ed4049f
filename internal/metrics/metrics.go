// Package metrics holds the project's Prometheus metrics, registered with controller-runtime's registry by
// Register, so that they are served beside its own webhook, controller and client metrics. Importing the
// package registers nothing: a package that counts (config's reloads through a callback, the webhook, the
// reconciler) can be imported by a test or a tool without the process's registry. Every label is bounded by
// the configuration (a source Secret, an outcome, an operation), never by namespaces or Pods.
package metrics

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/pullsecret-injector/pullsecret-injector/internal/version"
)

// Namespace is the prefix of every metric of the project.
const Namespace = "pullsecret_injector"

// Outcome is what an admission did with a Pod create.
type Outcome string

// The outcomes of a Pod create, the values of the admissions counter's outcome label.
const (
	// Injected: one reference or more was added.
	Injected Outcome = "injected"
	// NothingToAdd: no image pulls from a configured registry, or the Pod references every Secret already.
	NothingToAdd Outcome = "nothing_to_add"
	// NotSelected: the namespace is not opted in, or no matching entry selects it.
	NotSelected Outcome = "not_selected"
	// OptedOut: the Pod carries the opt-out label.
	OptedOut Outcome = "opted_out"
	// Error: the request was refused as malformed, or the namespace could not be read.
	Error Outcome = "error"
)

// Operation is what was done to a copy, the values of the copy operations counter's operation label.
type Operation string

// The operations on copies.
const (
	Created Operation = "created"
	Updated Operation = "updated"
	Deleted Operation = "deleted"
	Failed  Operation = "failed"
)

// The values of the configuration reloads counter's result label.
const (
	reloadSuccess = "success"
	reloadFailure = "failure"
)

var (
	admissions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace,
		Name:      "admissions_total",
		Help:      "Pod create admissions answered, by outcome: injected, nothing_to_add, not_selected, opted_out, error.",
	}, []string{"outcome"})
	// admissionCounters holds each outcome's counter resolved once, so that counting costs an admission one
	// atomic add and no label lookup. It is built with the package, not by Register, so that an admission
	// counts the same whether or not the counter is served.
	admissionCounters = outcomeCounters()

	copyOperations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace,
		Name:      "copy_operations_total",
		Help:      "Writes to managed copies, by configured source Secret (namespace/name) and operation: created, updated, deleted, failed.",
	}, []string{"source", "operation"})

	sourceInvalid = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace,
		Name:      "source_invalid",
		Help: "1 when a configured source Secret (namespace/name) is missing, has the wrong type or holds no credential " +
			"the kubelet would use for its entries' registries; 0 when it is usable.",
	}, []string{"source"})

	configReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace,
		Name:      "config_reloads_total",
		Help:      "Configuration file changes read, by result: success (the new configuration is in force) or failure (refused, the previous one stays).",
	}, []string{"result"})

	configLastSuccess = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace,
		Name:      "config_last_reload_success_timestamp_seconds",
		Help:      "Unix time at which the configuration in force was loaded.",
	})

	eventsDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace,
		Name:      "events_dropped_total",
		Help:      "Kubernetes Events not emitted because their rate limit was reached.",
	})

	reconcilerRate = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace,
		Name:      "reconciler_rate_limit",
		Help: "Requests per second the reconciler's client may send now: --reconciler-qps at most, less while the API server " +
			"answers its writes slower than when it was least loaded, or refuses its requests (429 or 5xx).",
	})

	reconcilerRateChanges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace,
		Name:      "reconciler_rate_changes_total",
		Help: "Changes of the reconciler's rate limit, by reason: increase (requests waited and the API server kept up), " +
			"slow (its writes were answered slower) or throttled (429 or 5xx answers).",
	}, []string{"reason"})

	metricsReviews = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace,
		Name:      "metrics_reviews_total",
		Help: "TokenReviews (review=token) and SubjectAccessReviews (review=access) the secure metrics endpoint asked the API server, " +
			"by lane: serviceaccount (a token that passed the local check against the ServiceAccount issuer's keys) or other.",
	}, []string{"review", "lane"})

	metricsRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace,
		Name:      "metrics_requests_refused_total",
		Help: "Requests to the secure metrics endpoint refused, by reason: no_token, invalid_token (refused by the local check, " +
			"no review), rejected (by a TokenReview), over_budget (429), forbidden (by a SubjectAccessReview), error (the API server could not be asked).",
	}, []string{"reason"})

	// buildInfo has one series, always 1, whose labels say which build runs; its label values are the
	// binary's own, fixed at build time.
	buildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace,
		Name:      "build_info",
		Help:      "Always 1; its labels are the running binary's version, git commit and Go version, as --version prints them.",
	}, []string{"version", "commit", "goversion"})
)

// registerOnce makes Register idempotent: the process calls it once, and tests that read a metric from the
// registry call it too, in any order.
var registerOnce sync.Once

// Register registers the project's metrics with controller-runtime's registry, which the manager's metrics
// endpoint serves. main calls it before the manager starts; calling it again does nothing.
func Register() {
	registerOnce.Do(func() { register(ctrlmetrics.Registry) })
}

// register registers every collector of the package with r, each series of a fixed label set created at
// zero first, so that a scrape shows them before anything has been counted.
func register(r prometheus.Registerer) {
	for _, result := range []string{reloadSuccess, reloadFailure} {
		configReloads.WithLabelValues(result)
	}
	for _, review := range []string{reviewToken, reviewAccess} {
		for _, l := range []lane{{serviceAccount: true}, {}} {
			metricsReviews.WithLabelValues(review, l.label())
		}
	}
	for _, reason := range refusalReasons {
		metricsRefused.WithLabelValues(string(reason))
	}
	for _, reason := range rateChangeReasons {
		reconcilerRateChanges.WithLabelValues(reason)
	}
	buildInfo.WithLabelValues(version.Version, version.Commit, version.GoVersion()).Set(1)
	r.MustRegister(admissions, copyOperations, sourceInvalid, configReloads, configLastSuccess, eventsDropped,
		reconcilerRate, reconcilerRateChanges, metricsReviews, metricsRefused, buildInfo)
}

func outcomeCounters() map[Outcome]prometheus.Counter {
	counters := map[Outcome]prometheus.Counter{}
	for _, o := range []Outcome{Injected, NothingToAdd, NotSelected, OptedOut, Error} {
		counters[o] = admissions.WithLabelValues(string(o))
	}
	return counters
}

// Admission counts one admission with its outcome.
func Admission(o Outcome) {
	if c, ok := admissionCounters[o]; ok {
		c.Inc()
	}
}

// CopyOperation counts one write to a copy of source (namespace/name).
func CopyOperation(source string, op Operation) {
	copyOperations.WithLabelValues(source, string(op)).Inc()
}

// SourceInvalid sets the source's gauge.
func SourceInvalid(source string, invalid bool) {
	v := 0.0
	if invalid {
		v = 1
	}
	sourceInvalid.WithLabelValues(source).Set(v)
}

// ForgetSource removes the series of a source that is no longer configured.
func ForgetSource(source string) {
	sourceInvalid.DeleteLabelValues(source)
}

// ConfigReload counts a read of the configuration file that found a change (or could not read it): ok when
// the new configuration took effect at at, which also sets the time of the last good one. It has the shape
// of config.ReloadFunc, which main connects it to.
func ConfigReload(ok bool, at time.Time) {
	if !ok {
		configReloads.WithLabelValues(reloadFailure).Inc()
		return
	}
	configReloads.WithLabelValues(reloadSuccess).Inc()
	configLastSuccess.Set(float64(at.Unix()))
}

// rateChangeReasons are the reasons of the reconciler's rate changes (package ratelimit's decisions that
// change the rate).
var rateChangeReasons = []string{"increase", "slow", "throttled"}

// ReconcilerRate sets the reconciler's current rate limit, in requests per second, after a decision with
// reason; a reason among rateChangeReasons is counted as a change.
func ReconcilerRate(reason string, perSecond float64) {
	reconcilerRate.Set(perSecond)
	if slices.Contains(rateChangeReasons, reason) {
		reconcilerRateChanges.WithLabelValues(reason).Inc()
	}
}

// EventDropped counts an Event the rate limit held back.
func EventDropped() {
	eventsDropped.Inc()
}

// RegisterCertificateExpiry registers a gauge of the serving certificate's expiry time, read from notAfter
// at each scrape; notAfter returns false while there is no certificate, and the gauge is then 0.
func RegisterCertificateExpiry(notAfter func() (time.Time, bool)) error {
	return ctrlmetrics.Registry.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: Namespace,
		Name:      "certificate_expiry_timestamp_seconds",
		Help:      "Unix time at which the webhook's serving certificate expires.",
	}, func() float64 {
		t, ok := notAfter()
		if !ok {
			return 0
		}
		return float64(t.Unix())
	}))
}
