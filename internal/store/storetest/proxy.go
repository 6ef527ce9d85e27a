package storetest

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/store"
)

// Proxy forwards TCP connections to a dependency (the test PostgreSQL or Redis) and can
// cut them, so a test sees a real outage of the shared services without touching them:
// Cut refuses new connections and breaks the open ones, Restore listens again on the
// same address.
type Proxy struct {
	t      testing.TB
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener // nil while cut
	conns map[net.Conn]struct{}
}

// NewProxy starts a proxy to target (host:port), stopped at cleanup.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := new(net.ListenConfig).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &Proxy{t: t, target: target, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	p.serve(ln)
	t.Cleanup(p.Cut)
	return p
}

// Addr is the proxy's address (host:port), the same before and after a cut.
func (p *Proxy) Addr() string { return p.addr }

// Cut closes the listener (new connections are refused) and every open connection.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// Restore listens again on the proxy's address.
func (p *Proxy) Restore() {
	p.t.Helper()
	ln, err := new(net.ListenConfig).Listen(context.Background(), "tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy listen again on %s: %v", p.addr, err)
	}
	p.serve(ln)
}

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed by Cut
			}
			go p.forward(c)
		}
	}()
}

// forward copies both ways between c and a new connection to the target until either
// side closes or Cut closes both.
func (p *Proxy) forward(c net.Conn) {
	up, err := new(net.Dialer).DialContext(context.Background(), "tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	if !p.track(c, up) {
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	p.untrack(c, up)
}

// track registers the connections of one forward, closing them instead when the proxy
// was cut meanwhile.
func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		for _, c := range conns {
			_ = c.Close()
		}
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}

// NewBehind is New with the store's connections made through p (a Proxy to the test
// PostgreSQL).
func NewBehind(t testing.TB, p *Proxy) *store.Store {
	t.Helper()
	ensureTemplate(t)
	u, err := url.Parse(NewDatabase(t, templateName))
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.Addr()
	return store.New(Pool(t, u.String()))
}

// RedisBehind is Redis with the client's connections made through p (a Proxy to the
// test Redis). Keys are deleted at cleanup over a direct connection, as the proxy may be
// cut then.
func RedisBehind(t testing.TB, p *Proxy) (redis.UniversalClient, redisclient.Keyspace) {
	t.Helper()
	_, ks := Redis(t)
	u, err := url.Parse(RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.Addr()
	c, err := redisclient.Open(context.Background(), u.String(), 0)
	if err != nil {
		t.Fatalf("connect to test redis through a proxy: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
			t.Errorf("close redis: %v", err)
		}
	})
	return c, ks
}

// PostgresAddr is the host:port of the test PostgreSQL.
func PostgresAddr() string { return hostOf(BaseURL()) }

// RedisAddr is the host:port of the test Redis.
func RedisAddr() string { return hostOf(RedisURL()) }

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		panic("bad test dependency url: " + err.Error())
	}
	return u.Host
}
