package proxy

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	mesh "github.com/meshgit/mesh"
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

// appBuf is the read buffer of the benchmark's applications (sinks), the same on every path.
const appBuf = 256 << 10

// serveSink accepts on ln; each connection, wrapped by wrap (nil: plain TCP), is read to its end
// and answered with the byte count.
func serveSink(b *testing.B, ln net.Listener, wrap func(net.Conn) net.Conn) {
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if wrap != nil {
					c = wrap(c)
				}
				buf := make([]byte, appBuf)
				var n int64
				for {
					k, err := c.Read(buf)
					n += int64(k)
					if err != nil {
						break
					}
				}
				binary.Write(c, binary.BigEndian, n)
			}()
		}
	}()
}

// sink is a plain TCP application.
func sink(b *testing.B) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	serveSink(b, ln, nil)
	return ln.Addr().(*net.TCPAddr).Port
}

// tlsSink is a TLS server endpoint of a mesh service (the certificate of dir): what a sidecar's
// outbound leg talks to.
func tlsSink(b *testing.B, dir string) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := newCertFiles(dir).serverTLS()
	serveSink(b, ln, func(c net.Conn) net.Conn { return tls.Server(c, srv) })
	return ln.Addr().(*net.TCPAddr).Port
}

// relay is a plain TCP copy (no TLS, no xDS) from a new port to target through the proxy's own
// copy loop (a kernel splice between two TCP connections): the floor of what any user-space
// proxy costs. userspace forces a read/write copy through a buffer instead.
func relay(b *testing.B, target string, userspace bool) int {
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
				if userspace {
					pipe(hideTCP{c}, hideTCP{up})
					return
				}
				pipe(c, up)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// hideTCP hides a *net.TCPConn (and so splice) from the copy loop.
type hideTCP struct{ net.Conn }

func (h hideTCP) CloseWrite() error { return h.Conn.(*net.TCPConn).CloseWrite() }

var zeros = make([]byte, 256<<10)

// send writes prefix and n bytes to c, half-closes, and checks the sink's count.
func send(c net.Conn, prefix []byte, n int64) error {
	defer c.Close()
	if _, err := c.Write(prefix); err != nil {
		return err
	}
	for left := n; left > 0; {
		k := min(left, int64(len(zeros)))
		if _, err := c.Write(zeros[:k]); err != nil {
			return err
		}
		left -= k
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var got int64
	if err := binary.Read(c, binary.BigEndian, &got); err != nil {
		return err
	}
	if want := int64(len(prefix)) + n; got != want {
		return fmt.Errorf("the sink read %d bytes, want %d", got, want)
	}
	return nil
}

// benchMesh: web's sidecar calls api (whose sidecar fronts a plain sink) and store (a TLS
// server endpoint with store's certificate, no sidecar); the mesh gateway routes blob's SNI to
// blob's endpoint, a plain sink.
const benchMesh = `package mesh

mesh: {
	name:             "bench"
	trustDomain:      "shop.mesh"
	datacenter:       "dc1"
	datacenters:      ["dc1"]
	defaultIntention: "deny"
}

services: api: {protocol: "tcp", port: %d, endpoints: [{address: "127.0.0.1", port: %d}]}
services: web: {protocol: "tcp", port: %d, endpoints: [{address: "127.0.0.1", port: %d}], upstreams: {api: localPort: %d, store: localPort: %d}}
services: store: {protocol: "tcp", port: %d, endpoints: [{address: "127.0.0.1", port: %d}]}
services: blob: {protocol: "tcp", port: %d, endpoints: [{address: "127.0.0.1", port: %d}]}

intentions: api: web: action: "allow"
intentions: store: web: action: "allow"
`

// blobSNI is the SNI of blob's target, which the gateway routes by.
const blobSNI = "blob.default.dc1.internal.shop.mesh"

// clientHello returns the bytes of a TLS ClientHello for sni, as a caller of the gateway sends.
func clientHello(sni string) []byte {
	var cc captureConn
	tls.Client(&cc, &tls.Config{ServerName: sni, InsecureSkipVerify: true}).Handshake()
	return cc.written
}

// captureConn records what is written to it and reads nothing.
type captureConn struct{ written []byte }

func (c *captureConn) Write(b []byte) (int, error) {
	c.written = append(c.written, b...)
	return len(b), nil
}
func (*captureConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (*captureConn) Close() error                     { return nil }
func (*captureConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (*captureConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (*captureConn) SetDeadline(time.Time) error      { return nil }
func (*captureConn) SetReadDeadline(time.Time) error  { return nil }
func (*captureConn) SetWriteDeadline(time.Time) error { return nil }

// benchPath is one way from the benchmark's client to a sink.
type benchPath struct {
	name   string
	prefix []byte // sent before the payload and counted by the sink (the gateway's ClientHello)
	dial   func() (net.Conn, error)
}

// throughputPaths starts the applications and the proxies of every path: web's and api's
// sidecars and a mesh gateway, all served by one xDS server.
func throughputPaths(b *testing.B) []benchPath {
	e := newEnv(b)
	app, blob := sink(b), sink(b)
	storeDir := e.certDir("store")
	store := tlsSink(b, storeDir)
	apiPub, webUp, storeUp, gw := freePort(b), freePort(b), freePort(b), freePort(b)
	gateways := map[string][]mesh.Gateway{"dc1": {{Service: "gateway", Address: "127.0.0.1", Port: gw}}}
	e.serve = func(snap *mesh.Snapshot) {
		if err := e.xs.SetSnapshot(snap.WithMeshGateways(gateways)); err != nil {
			b.Fatal(err)
		}
	}
	e.commit(fmt.Sprintf(benchMesh, app, apiPub, freePort(b), freePort(b), webUp, storeUp, store, store, blob, blob))
	webDir := e.certDir("web")
	e.proxy("api", e.certDir("api"))
	e.proxy("web", webDir)
	e.proxyWith(Config{XDSAddr: e.xdsAddr, Service: "gateway", Kind: mesh.KindMeshGateway})

	addr := func(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }
	tcp := func(port int) func() (net.Conn, error) {
		return func() (net.Conn, error) { return net.Dial("tcp", addr(port)) }
	}
	paths := []benchPath{
		{name: "direct", dial: tcp(app)},
		{name: "relay-splice", dial: tcp(relay(b, addr(app), false))},
		{name: "relay-userspace", dial: tcp(relay(b, addr(app), true))},
		{name: "gateway", prefix: clientHello(blobSNI), dial: tcp(gw)},
		{name: "sidecar-outbound", dial: tcp(storeUp)},
		{name: "sidecar-inbound", dial: func() (net.Conn, error) { return mtlsDial(addr(apiPub), webDir) }},
		{name: "sidecar-pair", dial: tcp(webUp)},
	}
	for _, p := range paths {
		eventually(b, 10*time.Second, p.name+" ready", func() error {
			c, err := p.dial()
			if err != nil {
				return err
			}
			return send(c, p.prefix, 1)
		})
	}
	return paths
}

// BenchmarkThroughput moves benchBytes on loopback from a client to a sink application, each
// path in the same run: straight ("direct"); through a plain TCP copy, spliced and in user
// space ("relay-*"); through one built-in proxy as a mesh gateway (SNI read, bytes relayed
// undecrypted: "gateway"); through one sidecar, plaintext in and mTLS out to a TLS endpoint with
// the target's certificate ("sidecar-outbound"), or mTLS in and plaintext out
// ("sidecar-inbound"); and through a pair of sidecars ("sidecar-pair"). Each case reports its
// ratio to direct ("x-direct", only when direct ran in the same run) and the CPU time
// the process spent per byte ("cpu-ns/B").
func BenchmarkThroughput(b *testing.B) {
	n := benchBytes(b)
	paths := throughputPaths(b)
	var direct float64 // MB/s
	for _, p := range paths {
		b.Run(p.name, func(b *testing.B) {
			b.SetBytes(n)
			start, cpu0 := time.Now(), cpuTime()
			for b.Loop() {
				c, err := p.dial()
				if err != nil {
					b.Fatal(err)
				}
				if err := send(c, p.prefix, n); err != nil {
					b.Fatal(err)
				}
			}
			mbs := float64(n) * float64(b.N) / time.Since(start).Seconds() / 1e6
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(n)/float64(b.N), "cpu-ns/B")
			if p.name == "direct" {
				direct = mbs
			} else if direct > 0 {
				b.ReportMetric(mbs/direct, "x-direct")
			}
		})
	}
}

// connectSamples is how many connections one iteration of BenchmarkConnect opens per path.
const connectSamples = 200

// BenchmarkConnect measures connection setup: dial, one byte there and back, close; reported as
// the mean (ns/op) and the p50 and p99 of connectSamples connections per iteration. "inbound"
// is a caller speaking mTLS to one sidecar, a full handshake each time ("inbound-resumed": it
// resumes its session); "two-proxies" goes through the sidecar pair, whose hop is mTLS (resumed
// once the first connection is made; the caller's legs are plaintext on loopback).
func BenchmarkConnect(b *testing.B) {
	app := newEchoServer(b)
	s := newSidecarsFor(b, "allow", app.port())
	waitListening(b, s)
	// The caller of "inbound" keeps its certificate files (and, resuming, its sessions).
	inbound := func(resume bool) func() (net.Conn, error) {
		cf := newCertFiles(s.webDir)
		cfg := cf.clientTLS(&upstreamTLS{sans: map[string]bool{"spiffe://shop.mesh/ns/default/dc/dc1/svc/api": true}})
		if resume {
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
		}
		return func() (net.Conn, error) { return tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.apiPub), cfg) }
	}
	plain := func(addr string) func() (net.Conn, error) {
		return func() (net.Conn, error) { return net.Dial("tcp", addr) }
	}
	for _, tc := range []struct {
		name string
		dial func() (net.Conn, error)
	}{
		{"direct", plain(fmt.Sprintf("127.0.0.1:%d", app.port()))},
		{"inbound", inbound(false)},
		{"inbound-resumed", inbound(true)},
		{"two-proxies", plain(s.upstream())},
	} {
		b.Run(tc.name, func(b *testing.B) {
			buf := make([]byte, 1)
			var lat []time.Duration
			for b.Loop() {
				for range connectSamples {
					t0 := time.Now()
					c, err := tc.dial()
					if err != nil {
						b.Fatal(err)
					}
					if _, err := c.Write([]byte{'x'}); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(c, buf); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(t0))
					c.Close()
				}
			}
			slices.Sort(lat)
			var sum time.Duration
			for _, d := range lat {
				sum += d
			}
			b.ReportMetric(float64(sum.Nanoseconds())/float64(len(lat)), "ns/op")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
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
