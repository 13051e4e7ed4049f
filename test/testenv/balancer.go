package testenv

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// Balancer is a TCP load balancer on loopback, as a Service's virtual IP is to the API server: each new
// connection goes to the next routable backend in turn, and a backend removed from the rotation keeps the
// connections it has. Tests remove a backend some time after they stop it, as endpoints lag in a cluster.
type Balancer struct {
	// Port is the port the balancer listens on at 127.0.0.1.
	Port int

	ln       net.Listener
	mu       sync.Mutex
	backends []string
	next     int
	open     map[net.Conn]bool
	conns    sync.WaitGroup
}

// StartBalancer starts a Balancer over backends (host:port addresses).
func StartBalancer(backends ...string) (*Balancer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the balancer: %w", err)
	}
	b := &Balancer{Port: ln.Addr().(*net.TCPAddr).Port, ln: ln, backends: append([]string(nil), backends...), open: map[net.Conn]bool{}}
	go b.serve()
	return b, nil
}

// Add puts backend into the rotation.
func (b *Balancer) Add(backend string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.backends = append(b.backends, backend)
}

// Remove takes backend out of the rotation for new connections.
func (b *Balancer) Remove(backend string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, be := range b.backends {
		if be == backend {
			b.backends = append(b.backends[:i], b.backends[i+1:]...)
			return
		}
	}
}

// Stop closes the listener and every connection it proxies, and waits for them to end.
func (b *Balancer) Stop() error {
	err := b.ln.Close()
	b.mu.Lock()
	for c := range b.open {
		_ = c.Close()
	}
	b.mu.Unlock()
	b.conns.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("stop balancer: %w", err)
	}
	return nil
}

func (b *Balancer) pick() (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.backends) == 0 {
		return "", false
	}
	b.next = (b.next + 1) % len(b.backends)
	return b.backends[b.next], true
}

func (b *Balancer) serve() {
	for {
		client, err := b.ln.Accept()
		if err != nil {
			return
		}
		backend, ok := b.pick()
		if !ok {
			_ = client.Close()
			continue
		}
		b.conns.Add(1)
		go func() {
			defer b.conns.Done()
			server, err := net.Dial("tcp", backend)
			if err != nil {
				_ = client.Close()
				return
			}
			b.track(client, server)
			defer b.untrack(client, server)
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(server, client); done <- struct{}{} }()
			go func() { _, _ = io.Copy(client, server); done <- struct{}{} }()
			<-done
		}()
	}
}

func (b *Balancer) track(conns ...net.Conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range conns {
		b.open[c] = true
	}
}

func (b *Balancer) untrack(conns ...net.Conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
		delete(b.open, c)
	}
}
