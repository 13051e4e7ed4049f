package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"
	"k8s.io/apimachinery/pkg/util/wait"
	certutil "k8s.io/client-go/util/cert"
	"sigs.k8s.io/yaml"
)

// RegistryVersion is the version of the CNCF distribution registry hack/build-registry.sh builds.
const RegistryVersion = "3.1.2"

// RegistryBinary returns the distribution registry binary: REGISTRY_BINARY when set, otherwise the cache
// hack/build-registry.sh writes.
func RegistryBinary() (string, error) {
	bin := os.Getenv("REGISTRY_BINARY")
	if bin == "" {
		bin = filepath.Join(RepoRoot(), "bin", "registry", RegistryVersion, "registry")
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("find registry binary (run `make registry` or set REGISTRY_BINARY): %w", err)
	}
	return bin, nil
}

// Registry is a running distribution registry on 127.0.0.1 that serves TLS with a certificate of its own CA
// and admits only the users it was started with (htpasswd, HTTP basic auth).
type Registry struct {
	// Host is 127.0.0.1:<port>: the registry part of an image reference and the key of its credentials in
	// a dockerconfigjson.
	Host string
	// Transport trusts the registry's CA and nothing else.
	Transport *http.Transport
	// LogPath is the file the registry writes its output to.
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}
}

// StartRegistry runs the registry binary with its configuration, TLS files, htpasswd file and storage in
// dir, admitting users (name to password), and returns once it answers on /v2/.
// A registry that could not bind its port is started again on another, a few times.
func StartRegistry(ctx context.Context, binary, dir string, users map[string]string) (*Registry, error) {
	for attempt := 1; ; attempt++ {
		r, err := startRegistry(ctx, binary, dir, users)
		if err == nil || !portInUse(err.Error()) || attempt == maxStartAttempts {
			return r, err
		}
	}
}

// startRegistry makes one attempt of StartRegistry.
func startRegistry(ctx context.Context, binary, dir string, users map[string]string) (*Registry, error) {
	certPEM, keyPEM, pool, err := registryCertificate()
	if err != nil {
		return nil, err
	}
	ports, err := FreePorts(1)
	if err != nil {
		return nil, err
	}
	host := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	if err := writeRegistryFiles(dir, host, certPEM, keyPEM, users); err != nil {
		return nil, err
	}

	logFile, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		return nil, fmt.Errorf("create registry log file: %w", err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	r := &Registry{Host: host, Transport: transport, LogPath: logFile.Name(), done: make(chan struct{})}
	r.cmd = exec.Command(binary, "serve", filepath.Join(dir, "config.yml"))
	r.cmd.Stdout, r.cmd.Stderr = logFile, logFile
	// The registry exports traces to an OTLP endpoint unless told otherwise; nothing listens for them here.
	r.cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	go func() {
		_ = r.cmd.Wait()
		_ = logFile.Close()
		close(r.done)
	}()
	if err := r.waitServing(ctx); err != nil {
		_ = r.Stop()
		return nil, fmt.Errorf("%w\n--- registry log ---\n%s", err, r.Log())
	}
	return r, nil
}

// registryCertificate returns a serving certificate for 127.0.0.1 and the pool of the CA that signed it.
func registryCertificate() (certPEM, keyPEM []byte, pool *x509.CertPool, err error) {
	certPEM, keyPEM, err = certutil.GenerateSelfSignedCertKey("127.0.0.1", nil, nil)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generate registry certificate: %w", err)
	}
	// The bundle is the serving certificate followed by the CA that signed it; only the CA is trusted, so
	// that the client verifies the chain as it would for a real registry.
	chain, err := certutil.ParseCertsPEM(certPEM)
	if err != nil || len(chain) != 2 {
		return nil, nil, nil, fmt.Errorf("parse registry certificate bundle (%d certificates): %w", len(chain), err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(chain[1])
	return certPEM, keyPEM, pool, nil
}

// writeRegistryFiles writes into dir the registry's configuration (config.yml, serving on host), its
// certificate and key, and its htpasswd file admitting users.
func writeRegistryFiles(dir, host string, certPEM, keyPEM []byte, users map[string]string) error {
	htpasswd, err := htpasswdFile(users)
	if err != nil {
		return err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return fmt.Errorf("generate registry http secret: %w", err)
	}
	files := map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "htpasswd": htpasswd}
	cfg, err := yaml.Marshal(map[string]any{
		"version": "0.1",
		"log":     map[string]any{"level": "info", "formatter": "text"},
		"storage": map[string]any{
			"filesystem":  map[string]any{"rootdirectory": filepath.Join(dir, "storage")},
			"maintenance": map[string]any{"uploadpurging": map[string]any{"enabled": false}},
		},
		"http": map[string]any{
			"addr":   host,
			"secret": fmt.Sprintf("%x", secret),
			"tls":    map[string]any{"certificate": filepath.Join(dir, "tls.crt"), "key": filepath.Join(dir, "tls.key")},
		},
		"auth": map[string]any{"htpasswd": map[string]any{"realm": "pullsecret-injector-e2e", "path": filepath.Join(dir, "htpasswd")}},
	})
	if err != nil {
		return fmt.Errorf("encode registry configuration: %w", err)
	}
	files["config.yml"] = cfg
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return fmt.Errorf("write registry file %q: %w", name, err)
		}
	}
	return nil
}

// waitServing polls GET /v2/ until the registry answers it over TLS. Without credentials the answer is 401,
// which is enough: the listener is up and the auth configuration loaded.
func (r *Registry) waitServing(ctx context.Context) error {
	client := &http.Client{Transport: r.Transport, Timeout: 5 * time.Second}
	url := "https://" + r.Host + "/v2/"
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		select {
		case <-r.done:
			return false, errors.New("registry exited before it served")
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		resp, err := client.Do(req)
		if err != nil {
			last = err
			return false, nil
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("wait for the registry on %s: %w", r.Host, errors.Join(err, last))
	}
	return nil
}

// htpasswdFile returns an htpasswd file with a bcrypt hash for each user, the only scheme the registry
// accepts.
func htpasswdFile(users map[string]string) ([]byte, error) {
	var buf bytes.Buffer
	for _, name := range slices.Sorted(maps.Keys(users)) {
		hash, err := bcrypt.GenerateFromPassword([]byte(users[name]), bcrypt.DefaultCost)
		if err != nil {
			return nil, fmt.Errorf("hash password of registry user %q: %w", name, err)
		}
		fmt.Fprintf(&buf, "%s:%s\n", name, hash)
	}
	return buf.Bytes(), nil
}

// Log returns what the registry has written so far.
func (r *Registry) Log() string {
	b, err := os.ReadFile(r.LogPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", r.LogPath, err)
	}
	return string(bytes.TrimSpace(b))
}

// Stop kills the registry's process group and waits for it. Its files stay in the directory it was given.
func (r *Registry) Stop() error {
	// Nothing of the registry is worth a graceful stop: the test that ran it is over.
	if !signalGroup(r.cmd.Process.Pid, r.done, syscall.SIGKILL, 15*time.Second) {
		return errors.New("registry did not exit within 15s of SIGKILL")
	}
	return nil
}
