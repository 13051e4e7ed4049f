package webhook

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

func TestRequestLoggerWritesTheDefaultFields(t *testing.T) {
	req := &admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: "uid-1", Namespace: "team", Name: "web",
		Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
	}}
	req.UserInfo.Username = "alice"
	core, logs := observer.New(zapcore.InfoLevel)
	base := zapr.NewLogger(zap.New(core, zap.AddCaller()))
	write := func(construct func(logr.Logger, *admission.Request) logr.Logger) []observer.LoggedEntry {
		construct(base, req).WithName("pods").WithValues("k", "v").Info("hello", "x", 1)
		construct(base, req).V(1).Info("not written")
		construct(base, req).Error(errors.New("boom"), "failed")
		return logs.TakeAll()
	}
	eager, deferred := write(admission.DefaultLogConstructor), write(requestLogger)

	if len(deferred) != 2 || len(eager) != 2 {
		t.Fatalf("wrote %d lines deferred and %d eagerly, want 2 each", len(deferred), len(eager))
	}
	for i := range deferred {
		if diff := cmp.Diff(eager[i].ContextMap(), deferred[i].ContextMap()); diff != "" {
			t.Errorf("line %d fields mismatch with DefaultLogConstructor's (-want +got):\n%s", i, diff)
		}
		if eager[i].LoggerName != deferred[i].LoggerName || eager[i].Message != deferred[i].Message {
			t.Errorf("line %d is %q %q, want %q %q", i, deferred[i].LoggerName, deferred[i].Message, eager[i].LoggerName, eager[i].Message)
		}
		// The caller is the line that logged, not the sink.
		if deferred[i].Caller.File != eager[i].Caller.File || filepath.Base(deferred[i].Caller.File) != "log_test.go" {
			t.Errorf("line %d caller %s, want %s in log_test.go", i, deferred[i].Caller.File, eager[i].Caller.File)
		}
	}
}
