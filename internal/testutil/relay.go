package testutil

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Relay is a TCP relay on a fixed loopback address to a target: a network link a test can cut
// (Stop closes the listener and every connection through it, as a partition would) and restore
// (Start listens on the same address again).
type Relay struct {
	Addr   string // where it listens
	Target string

	t     testing.TB
	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
}

// NewRelay starts a relay on a free loopback address to target; it stops with the test.
func NewRelay(t testing.TB, target string) *Relay {
	t.Helper()
	r := &Relay{Addr: FreeAddr(t), Target: target, t: t, conns: map[net.Conn]bool{}}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Start listens again (a no-op while it listens). The address may have been taken by someone
// else in between: it retries for 2 s, then fails the test.
func (r *Relay) Start() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln != nil {
		return
	}
	var err error
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if r.ln, err = net.Listen("tcp", r.Addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		r.t.Fatalf("relay %s: %v", r.Addr, err)
	}
	go r.accept(r.ln)
}

// Stop closes the listener and cuts every connection through the relay.
func (r *Relay) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln != nil {
		r.ln.Close()
		r.ln = nil
	}
	for c := range r.conns {
		c.Close()
		delete(r.conns, c)
	}
}

func (r *Relay) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go r.pipe(c)
	}
}

func (r *Relay) pipe(c net.Conn) {
	u, err := net.DialTimeout("tcp", r.Target, 2*time.Second)
	if err != nil {
		c.Close()
		return
	}
	if !r.track(c, u) {
		return
	}
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(u, c)
	go cp(c, u)
	<-done
	<-done
	r.mu.Lock()
	delete(r.conns, c)
	delete(r.conns, u)
	r.mu.Unlock()
	c.Close()
	u.Close()
}

// track records both ends of a connection, or closes them when the relay stopped meanwhile.
func (r *Relay) track(c, u net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln == nil {
		c.Close()
		u.Close()
		return false
	}
	r.conns[c], r.conns[u] = true, true
	return true
}
