package config

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/wait"
)

// DefaultReloadInterval is how often Store reads the configuration file for a change.
const DefaultReloadInterval = 2 * time.Second

// ReloadFunc is told the outcome of the first load, of every read that found the file changed and of every
// read that failed: ok is true when the file's configuration took effect at at, false when the file could
// not be read or was refused. An unchanged file tells it nothing. It runs on the reload goroutine and must
// not block. The process connects it to the reload metrics: config imports nothing of the project's.
type ReloadFunc func(ok bool, at time.Time)

// Store holds the configuration in force and replaces it when the file changes. The file is read again
// every interval, not watched through inotify: Kubernetes updates a mounted ConfigMap by swapping the
// "..data" symlink of the volume, which a watch on the file itself never sees, and a read of a small file
// every few seconds costs nothing. A file that does not parse or validate is refused with every problem
// logged, and the previous configuration stays in force.
type Store struct {
	path     string
	interval time.Duration
	log      logr.Logger
	reloaded ReloadFunc

	// check is what a configuration must pass besides Validate to be put in force (see WithCheck).
	check func(*Matcher) error

	current atomic.Pointer[Matcher]

	mu sync.Mutex
	// data is the file content of the configuration in force or of the last refused one, so that a bad file
	// is reported once, not at every read.
	data        []byte
	subscribers []func(*Matcher)
}

// StoreOption changes how a Store loads configurations.
type StoreOption func(*Store)

// WithCheck makes check a condition of every configuration the Store loads, at start and on reload, after
// Validate: a configuration check refuses is treated as an invalid file, with check's error as the
// reason. It lets a mode of the process refuse what it cannot serve, such as a pattern the
// MutatingAdmissionPolicy compiler cannot express.
func WithCheck(check func(*Matcher) error) StoreOption {
	return func(s *Store) { s.check = check }
}

// NewStore loads the configuration at path. An invalid file is an error here: a process does not start on
// a configuration it cannot serve. reloaded, when not nil, is told of the first load and of every reload.
func NewStore(path string, interval time.Duration, log logr.Logger, reloaded ReloadFunc, opts ...StoreOption) (*Store, error) {
	if interval <= 0 {
		interval = DefaultReloadInterval
	}
	s := &Store{path: path, interval: interval, log: log, reloaded: reloaded}
	for _, o := range opts {
		o(s)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config file %q: %w", path, err)
	}
	m, err := s.compile(data)
	if err != nil {
		return nil, fmt.Errorf("load config file %q: %w", path, err)
	}
	s.data = data
	s.current.Store(m)
	s.report(true)
	return s, nil
}

// NewStaticStore returns a Store that serves m and never reloads, for tests and tools without a file.
func NewStaticStore(m *Matcher) *Store {
	s := &Store{}
	s.current.Store(m)
	return s
}

func (s *Store) compile(data []byte) (*Matcher, error) {
	c, err := Parse(data)
	if err != nil {
		return nil, err
	}
	m, err := NewMatcher(c)
	if err != nil {
		return nil, err
	}
	if s.check != nil {
		if err := s.check(m); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// report tells the ReloadFunc, if any, the outcome of a load.
func (s *Store) report(ok bool) {
	if s.reloaded != nil {
		s.reloaded(ok, time.Now())
	}
}

// Matcher returns the configuration in force. It is immutable; callers that need one consistent view for
// a whole operation keep the pointer rather than calling Matcher again.
func (s *Store) Matcher() *Matcher {
	return s.current.Load()
}

// Subscribe calls fn with every new configuration after it is in force. fn runs on the reload goroutine
// and must not block for long.
func (s *Store) Subscribe(fn func(*Matcher)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subscribers = append(s.subscribers, fn)
}

// NeedLeaderElection is false: every replica serves admissions with the configuration in force.
func (*Store) NeedLeaderElection() bool { return false }

// Start reads the file every interval until ctx ends. It implements manager.Runnable.
func (s *Store) Start(ctx context.Context) error {
	if s.path == "" {
		<-ctx.Done()
		return nil
	}
	wait.UntilWithContext(ctx, func(context.Context) { s.Reload() }, s.interval)
	return nil
}

// Reload reads the file once and, when its content changed and is valid, puts it in force. It reports
// whether a new configuration took effect.
func (s *Store) Reload() bool {
	data, err := os.ReadFile(s.path)
	if err != nil {
		// A ConfigMap volume swaps its symlink atomically, so this is not a half-written file; keep serving.
		s.log.Error(err, "Cannot read configuration file, keeping the configuration in force", "path", s.path)
		s.report(false)
		return false
	}
	s.mu.Lock()
	unchanged := bytes.Equal(data, s.data)
	s.data = data
	s.mu.Unlock()
	if unchanged {
		return false
	}
	m, err := s.compile(data)
	if err != nil {
		s.log.Error(err, "Configuration file refused, keeping the configuration in force", "path", s.path)
		s.report(false)
		return false
	}
	s.current.Store(m)
	s.report(true)
	s.mu.Lock()
	subscribers := slices.Clone(s.subscribers)
	s.mu.Unlock()
	s.log.Info("Configuration reloaded", "path", s.path, "registries", len(m.entries), "sources", len(m.sources))
	for _, fn := range subscribers {
		fn(m)
	}
	return true
}
