// Package events emits the project's Kubernetes Events (events.k8s.io) on copies and source Secrets, where
// `kubectl describe secret` shows them, through a rate limit: a burst of Pods in new namespaces, or a
// rotation reaching every copy, must not turn into a burst of writes to the API server.
package events

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/flowcontrol"

	"github.com/pullsecret-injector/pullsecret-injector/internal/metrics"
	"github.com/pullsecret-injector/pullsecret-injector/internal/redact"
)

// Controller is the reportingController of the project's Events.
const Controller = "pullsecret-injector"

// Reasons of the Events, in the UpperCamelCase Kubernetes uses.
const (
	// ReasonCopyCreated: a copy was created in a namespace, by an admission or by the reconciler.
	ReasonCopyCreated = "CopyCreated"
	// ReasonCopyUpdated: a copy was brought back in line with its source.
	ReasonCopyUpdated = "CopyUpdated"
	// ReasonCopyReplaced: a copy whose type or immutability differed was deleted and created again.
	ReasonCopyReplaced = "CopyReplaced"
	// ReasonCopyDeleted: a copy that no longer applies was deleted.
	ReasonCopyDeleted = "CopyDeleted"
	// ReasonCopyFailed: a write to a copy failed.
	ReasonCopyFailed = "CopyFailed"
	// ReasonSourceInvalid: a source Secret is missing a usable credential or has the wrong type.
	ReasonSourceInvalid = "SourceInvalid"
	// ReasonSourceValid: a source Secret that was invalid is usable again.
	ReasonSourceValid = "SourceValid"
	// ReasonPullSecretMissing: an ephemeral container added to a Pod needs a pull secret the Pod lacks.
	ReasonPullSecretMissing = "PullSecretMissing"
)

// Actions of the Events (events.k8s.io requires one).
const (
	ActionCreate = "Create"
	ActionUpdate = "Update"
	ActionDelete = "Delete"
	ActionCheck  = "Check"
)

// NoteLimit is the most bytes the API server accepts in an Event's note: it refuses an events.k8s.io/v1
// Event with a longer one (NoteLengthLimit in k8s.io/kubernetes pkg/apis/core/validation/events.go, which
// neither k8s.io/api nor apimachinery exports), and the Event is lost exactly when it has the most to say.
const NoteLimit = 1024

// Default rate: a rotation of 10,000 copies emits a few hundred Events, not 10,000.
const (
	DefaultQPS   = 5
	DefaultBurst = 50
)

// Recorder emits Events through a token bucket and counts the ones it drops. It cuts every note to
// NoteLimit bytes, at a UTF-8 boundary and ending with "...". A nil Recorder emits nothing.
type Recorder struct {
	rec   events.EventRecorder
	limit flowcontrol.RateLimiter
}

// New returns a Recorder that emits through rec at most qps Events a second, with bursts of burst.
func New(rec events.EventRecorder, qps float32, burst int) *Recorder {
	return &Recorder{rec: rec, limit: flowcontrol.NewTokenBucketRateLimiter(qps, burst)}
}

// Normal emits a Normal Event about regarding.
func (r *Recorder) Normal(regarding runtime.Object, reason, action, note string, args ...any) {
	r.emit(regarding, "Normal", reason, action, note, args...)
}

// Warning emits a Warning Event about regarding.
func (r *Recorder) Warning(regarding runtime.Object, reason, action, note string, args ...any) {
	r.emit(regarding, "Warning", reason, action, note, args...)
}

func (r *Recorder) emit(regarding runtime.Object, eventType, reason, action, note string, args ...any) {
	if r == nil {
		return
	}
	if !r.limit.TryAccept() {
		metrics.EventDropped()
		return
	}
	r.rec.Eventf(regarding, nil, eventType, reason, action, "%s", redact.Cut(fmt.Sprintf(note, args...), NoteLimit))
}
