package webhook

import (
	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// requestLogger is the admission webhook's LogConstructor. It gives a request's log lines the fields of
// admission.DefaultLogConstructor, but only when a line is written: the default adds them up front, twice
// per request, and zap encodes fields as they are added, at a cost comparable to the rest of a warm
// admission, for lines that are almost never written.
func requestLogger(base logr.Logger, req *admission.Request) logr.Logger {
	if req == nil {
		return base
	}
	return logr.New(&deferredSink{base: base, req: req})
}

// deferredSink holds a request and the base logger, and builds the logger with the request's fields when
// a line is enabled and written.
type deferredSink struct {
	base logr.Logger
	req  *admission.Request
	// depth is the call depth asked for with WithCallDepth; one more frame, this sink's, is added when the
	// line is written, so that the caller logged is the one that wrote it.
	depth int
	// values and names are what was added after construction, applied after the request's fields.
	values []any
	names  []string
}

var _ logr.CallDepthLogSink = (*deferredSink)(nil)

func (s *deferredSink) Init(logr.RuntimeInfo) {}

func (s *deferredSink) Enabled(level int) bool {
	return s.base.GetSink() != nil && s.base.GetSink().Enabled(level)
}

func (s *deferredSink) Info(level int, msg string, keysAndValues ...any) {
	if sink := s.build(); sink != nil {
		sink.Info(level, msg, keysAndValues...)
	}
}

func (s *deferredSink) Error(err error, msg string, keysAndValues ...any) {
	if sink := s.build(); sink != nil {
		sink.Error(err, msg, keysAndValues...)
	}
}

func (s *deferredSink) WithValues(keysAndValues ...any) logr.LogSink {
	c := *s
	c.values = append(append([]any(nil), s.values...), keysAndValues...)
	return &c
}

func (s *deferredSink) WithName(name string) logr.LogSink {
	c := *s
	c.names = append(append([]string(nil), s.names...), name)
	return &c
}

func (s *deferredSink) WithCallDepth(depth int) logr.LogSink {
	c := *s
	c.depth += depth
	return &c
}

func (s *deferredSink) build() logr.LogSink {
	l := admission.DefaultLogConstructor(s.base, s.req)
	for _, n := range s.names {
		l = l.WithName(n)
	}
	if len(s.values) > 0 {
		l = l.WithValues(s.values...)
	}
	return l.WithCallDepth(s.depth + 1).GetSink()
}
