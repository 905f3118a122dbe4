package proxy

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"testing"
	"time"
)

// benchBytes is the size of one transfer: 1 GiB, or $MESH_BENCH_PROXY_BYTES.
func benchBytes(b *testing.B) int64 {
	if v := os.Getenv("MESH_BENCH_PROXY_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			b.Fatalf("MESH_BENCH_PROXY_BYTES=%q", v)
		}
		return n
	}
	return 1 << 30
}

// sink reads each connection to its end and answers with the byte count.
func sink(b *testing.B) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				binary.Write(c, binary.BigEndian, n)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// relay is a plain TCP copy (no TLS, no xDS) from a new port to target: the baseline of what
// any user-space proxy costs.
func relay(b *testing.B, target string) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				up, err := net.Dial("tcp", target)
				if err != nil {
					c.Close()
					return
				}
				pipe(c, up)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

var zeros = make([]byte, 256<<10)

// send writes n bytes to conn, half-closes, and checks the sink's count.
func send(b *testing.B, c net.Conn, n int64) {
	for left := n; left > 0; {
		k := min(left, int64(len(zeros)))
		if _, err := c.Write(zeros[:k]); err != nil {
			b.Fatal(err)
		}
		left -= k
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	var got int64
	if err := binary.Read(c, binary.BigEndian, &got); err != nil || got != n {
		b.Fatalf("the sink read %d bytes (%v), want %d", got, err, n)
	}
	c.Close()
}

// BenchmarkThroughput moves benchBytes on loopback: straight to the application ("direct"),
// through a plain TCP copy ("relay"), through one built-in proxy that terminates mTLS (the
// caller speaks mTLS itself: "one-proxy"), and through a pair of sidecars ("two-proxies").
func BenchmarkThroughput(b *testing.B) {
	n := benchBytes(b)
	app := sink(b)
	s := newSidecarsFor(b, "allow", app)
	waitListening(b, s)
	cases := []struct {
		name string
		dial func() (net.Conn, error)
	}{
		{"direct", func() (net.Conn, error) { return net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", app)) }},
		{"relay", func() (net.Conn, error) {
			return net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", relay(b, fmt.Sprintf("127.0.0.1:%d", app))))
		}},
		{"one-proxy", func() (net.Conn, error) { return mtlsDial(fmt.Sprintf("127.0.0.1:%d", s.apiPub), s.webDir) }},
		{"two-proxies", func() (net.Conn, error) { return net.Dial("tcp", s.upstream()) }},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(n)
			for b.Loop() {
				c, err := tc.dial()
				if err != nil {
					b.Fatal(err)
				}
				send(b, c, n)
			}
		})
	}
}

// BenchmarkConnect measures connection setup: dial, one byte there and back, close; through the
// sidecar pair that is two mTLS handshakes' worth (the caller's leg is plaintext on loopback).
func BenchmarkConnect(b *testing.B) {
	app := newEchoServer(b)
	s := newSidecarsFor(b, "allow", app.port())
	waitListening(b, s)
	for _, tc := range []struct{ name, addr string }{
		{"direct", fmt.Sprintf("127.0.0.1:%d", app.port())},
		{"two-proxies", s.upstream()},
	} {
		b.Run(tc.name, func(b *testing.B) {
			buf := make([]byte, 1)
			for b.Loop() {
				c, err := net.Dial("tcp", tc.addr)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Write([]byte{'x'}); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

func waitListening(b *testing.B, s *sidecars) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := mtlsDial(fmt.Sprintf("127.0.0.1:%d", s.apiPub), s.webDir)
		if err == nil {
			c.Close()
			if _, ok := s.web.Status().Listeners[fmt.Sprintf("api:127.0.0.1:%d", s.webUp)]; ok && s.web.Status().Acked["type.googleapis.com/envoy.config.cluster.v3.Cluster"] != "" {
				// One real connection through the pair, so that endpoints are known.
				if c, err := net.Dial("tcp", s.upstream()); err == nil {
					c.Close()
					return
				}
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("sidecars not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mtlsDial opens an mTLS connection to a public listener with the certificate of dir.
func mtlsDial(addr, dir string) (net.Conn, error) {
	cf := newCertFiles(dir)
	c, err := tls.Dial("tcp", addr, cf.clientTLS(&upstreamTLS{sans: map[string]bool{"spiffe://shop.mesh/ns/default/dc/dc1/svc/api": true}}))
	if err != nil {
		return nil, err
	}
	return c, nil
}
