package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	mesh "github.com/meshgit/mesh"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// TestCopyHalf: between two TCP connections the copy is the kernel's (spliced), with a TLS side
// it is chunked through user space; either way every byte arrives in order and the end is passed
// on as a half-close.
func TestCopyHalf(t *testing.T) {
	payload := make([]byte, 3<<20+12345)
	rand.Read(payload)
	dir := newEnv(t).certDir("api")
	cf := newCertFiles(dir)
	for _, tlsSrc := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tlsSrc), func(t *testing.T) {
			client, srcEnd := tcpPair(t) // client writes, copyHalf reads srcEnd
			dstEnd, reader := tcpPair(t) // copyHalf writes dstEnd, reader reads
			var src net.Conn = srcEnd
			var cl net.Conn = client
			if tlsSrc {
				src = tls.Server(newRecordConn(srcEnd), cf.serverTLS())
				cl = tls.Client(client, &tls.Config{InsecureSkipVerify: true, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
					c, _, err := cf.load()
					return c, err
				}})
			}
			go func() {
				cl.Write(payload)
				cl.(closeWriter).CloseWrite()
			}()
			type result struct {
				n       int64
				spliced bool
				err     error
			}
			done := make(chan result, 1)
			go func() {
				n, spliced, err := copyHalf(dstEnd, src)
				done <- result{n, spliced, err}
			}()
			reader.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(reader) // ends only when the half-close arrives
			if err != nil {
				t.Fatal(err)
			}
			r := <-done
			if r.err != nil || r.n != int64(len(payload)) {
				t.Fatalf("copyHalf = %d, %v; want %d bytes", r.n, r.err, len(payload))
			}
			if r.spliced == tlsSrc {
				t.Fatalf("spliced = %v with a TLS source: %v", r.spliced, tlsSrc)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("the copy differs: %d bytes, want %d", len(got), len(payload))
			}
			// A half-close: the other direction of dst is still open.
			if _, err := reader.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			one := make([]byte, 1)
			dstEnd.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(dstEnd, one); err != nil {
				t.Fatalf("after the copy, dst no longer reads: %v", err)
			}
		})
	}
}

// recorder is an application that reads each connection to its end and reports what it read.
type recorder struct {
	port int
	got  chan []byte
	send []byte // written back after reading, then the connection ends
}

func newRecorder(t *testing.T, send []byte) *recorder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	r := &recorder{port: ln.Addr().(*net.TCPAddr).Port, got: make(chan []byte, 16), send: send}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				b, _ := io.ReadAll(c)
				r.got <- b
				c.Write(r.send)
			}()
		}
	}()
	return r
}

// gatewayEnv serves benchMesh with a mesh gateway on gw and returns it.
func gatewayEnv(t *testing.T, blobPort int) (e *env, gw int, gateway *Proxy) {
	e = newEnv(t)
	gw = freePort(t)
	gateways := map[string][]mesh.Gateway{"dc1": {{Service: "gateway", Address: "127.0.0.1", Port: gw}}}
	e.serve = func(snap *mesh.Snapshot) {
		if err := e.xs.SetSnapshot(snap.WithMeshGateways(gateways)); err != nil {
			t.Fatal(err)
		}
	}
	e.commit(fmt.Sprintf(benchMesh, 1, freePort(t), freePort(t), freePort(t), freePort(t), freePort(t), 1, freePort(t), blobPort, blobPort))
	gateway = e.proxyWith(Config{XDSAddr: e.xdsAddr, Service: "gateway", Kind: mesh.KindMeshGateway})
	return e, gw, gateway
}

// TestGatewayRelaysByteExact: a mesh gateway passes the ClientHello it read and everything
// after it byte for byte, both ways, and the relay is the kernel's (spliced).
func TestGatewayRelaysByteExact(t *testing.T) {
	back := make([]byte, 5<<20+7)
	rand.Read(back)
	app := newRecorder(t, back)
	_, gw, gateway := gatewayEnv(t, app.port)
	hello := clientHello(blobSNI)
	payload := make([]byte, 9<<20+3)
	rand.Read(payload)
	var got []byte
	eventually(t, 10*time.Second, "the gateway routes blob's SNI", func() error {
		var err error
		got, err = roundTripPrefix(fmt.Sprintf("127.0.0.1:%d", gw), hello, payload)
		if err != nil {
			return err
		}
		if len(got) == 0 {
			return errors.New("nothing came back")
		}
		return nil
	})
	select {
	case read := <-app.got:
		if !bytes.Equal(read, append(bytes.Clone(hello), payload...)) {
			t.Fatalf("the application read %d bytes, not the %d-byte ClientHello and the %d-byte payload as sent", len(read), len(hello), len(payload))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the application read nothing")
	}
	if !bytes.Equal(got, back) {
		t.Fatalf("the caller got %d bytes back, want the %d the application sent", len(got), len(back))
	}
	if n := gateway.spliced.Load(); n == 0 {
		t.Fatal("the gateway copied through user space, not with splice")
	}
}

// roundTripPrefix sends prefix and payload to addr, half-closes, and returns what came back.
func roundTripPrefix(addr string, prefix, payload []byte) ([]byte, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(append(bytes.Clone(prefix), payload...))
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got, rerr := io.ReadAll(c)
	if werr := <-errc; werr != nil && rerr == nil {
		rerr = werr
	}
	return got, rerr
}

// halfCloser is an application that checks half-closes. serverFirst: it writes "greeting",
// half-closes, then reads to the end; otherwise it reads to the end, then writes "reply" and
// half-closes. It reports what it read (after skip bytes).
type halfCloser struct {
	port        int
	serverFirst atomic.Bool
	got         chan []byte
}

func newHalfCloser(t *testing.T, skip int, wrap func(net.Conn) net.Conn) *halfCloser {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	h := &halfCloser{port: ln.Addr().(*net.TCPAddr).Port, got: make(chan []byte, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go h.serve(c, skip, wrap)
		}
	}()
	return h
}

func (h *halfCloser) serve(c net.Conn, skip int, wrap func(net.Conn) net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if wrap != nil {
		c = wrap(c)
	}
	first := h.serverFirst.Load()
	if first {
		c.Write([]byte("greeting"))
		c.(closeWriter).CloseWrite()
	}
	b, err := io.ReadAll(c)
	if err != nil || len(b) < skip {
		h.got <- nil
		return
	}
	h.got <- b[skip:]
	if !first {
		c.Write([]byte("reply"))
		c.(closeWriter).CloseWrite()
		io.Copy(io.Discard, c)
	}
}

// checkHalfCloses runs both orders through dial: the caller's half-close reaches the
// application, which still answers; the application's reaches the caller, who still sends.
func checkHalfCloses(t *testing.T, h *halfCloser, prefix []byte, dial func() (net.Conn, error)) {
	t.Helper()
	wait := func() []byte {
		select {
		case b := <-h.got:
			return b
		case <-time.After(10 * time.Second):
			t.Fatal("the application reported nothing")
			return nil
		}
	}
	// The caller ends first.
	h.serverFirst.Store(false)
	c, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write(append(bytes.Clone(prefix), "request"...))
	if err := c.(closeWriter).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got := wait(); string(got) != "request" {
		t.Fatalf("caller first: the application read %q", got)
	}
	if got, err := io.ReadAll(c); err != nil || string(got) != "reply" {
		t.Fatalf("caller first: the caller read %q, %v after its half-close; want the reply, then the end", got, err)
	}
	c.Close()

	// The application ends first.
	h.serverFirst.Store(true)
	c, err = dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write(append(bytes.Clone(prefix), "early"...))
	if got, err := io.ReadAll(c); err != nil || string(got) != "greeting" {
		t.Fatalf("application first: the caller read %q, %v; want the greeting, then the end", got, err)
	}
	if _, err := c.Write([]byte(" late")); err != nil {
		t.Fatalf("application first: the caller cannot send after the application's half-close: %v", err)
	}
	if err := c.(closeWriter).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got := wait(); string(got) != "early late" {
		t.Fatalf("application first: the application read %q", got)
	}
}

// TestHalfCloseEveryRole: half-closes pass both ways through the mesh gateway (TCP FINs
// around a splice), through a sidecar outbound (a FIN in, a close_notify out to a TLS
// endpoint, and back), through a sidecar inbound (a close_notify in, a FIN to the
// application) and through the pair.
func TestHalfCloseEveryRole(t *testing.T) {
	e := newEnv(t)
	storeDir, webDir := e.certDir("store"), e.certDir("web")
	hello := clientHello(blobSNI)
	api := newHalfCloser(t, 0, nil)
	blob := newHalfCloser(t, len(hello), nil)
	srv := newCertFiles(storeDir).serverTLS()
	store := newHalfCloser(t, 0, func(c net.Conn) net.Conn { return tls.Server(c, srv) })
	apiPub, webUp, storeUp, gw := freePort(t), freePort(t), freePort(t), freePort(t)
	gateways := map[string][]mesh.Gateway{"dc1": {{Service: "gateway", Address: "127.0.0.1", Port: gw}}}
	e.serve = func(snap *mesh.Snapshot) {
		if err := e.xs.SetSnapshot(snap.WithMeshGateways(gateways)); err != nil {
			t.Fatal(err)
		}
	}
	e.commit(fmt.Sprintf(benchMesh, api.port, apiPub, freePort(t), freePort(t), webUp, storeUp, store.port, store.port, blob.port, blob.port))
	e.proxy("api", e.certDir("api"))
	e.proxy("web", webDir)
	e.proxyWith(Config{XDSAddr: e.xdsAddr, Service: "gateway", Kind: mesh.KindMeshGateway})

	tcp := func(port int) func() (net.Conn, error) {
		return func() (net.Conn, error) {
			return net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second)
		}
	}
	for _, role := range []struct {
		name   string
		app    *halfCloser
		prefix []byte
		dial   func() (net.Conn, error)
	}{
		{"gateway", blob, hello, tcp(gw)},
		{"sidecar-outbound", store, nil, tcp(storeUp)},
		{"sidecar-inbound", api, nil, func() (net.Conn, error) { return mtlsDial(fmt.Sprintf("127.0.0.1:%d", apiPub), webDir) }},
		{"sidecar-pair", api, nil, tcp(webUp)},
	} {
		t.Run(role.name, func(t *testing.T) {
			eventually(t, 10*time.Second, role.name+" ready", func() error {
				role.app.serverFirst.Store(false)
				c, err := role.dial()
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * time.Second))
				c.Write(role.prefix)
				c.(closeWriter).CloseWrite()
				got, err := io.ReadAll(c)
				select {
				case <-role.app.got:
				case <-time.After(2 * time.Second):
				}
				if string(got) != "reply" {
					return fmt.Errorf("got %q, %v", got, err)
				}
				return nil
			})
			for len(role.app.got) > 0 {
				<-role.app.got // what the attempts above left
			}
			checkHalfCloses(t, role.app, role.prefix, role.dial)
		})
	}
}

// TestRecordConnFraming: a recordConn hands out records as they arrive, however the network
// cuts them (a header in pieces, a record's last bytes alone), never past a record's end, and
// never waits for bytes the peer has not sent (an interactive peer sends nothing more).
func TestRecordConnFraming(t *testing.T) {
	w, r := tcpPair(t)
	rc := newRecordConn(r).(*recordConn)
	record := func(n int, fill byte) []byte {
		b := append([]byte{23, 3, 3, byte(n >> 8), byte(n)}, bytes.Repeat([]byte{fill}, n)...)
		return b
	}
	recs := [][]byte{record(100, 'a'), record(1<<14+20, 'b'), record(1, 'c')}
	// How the writer cuts the stream: pieces sent alone after a pause, one spanning the end of a
	// record and the start of the next.
	stream := bytes.Join(recs, nil)
	end1 := len(recs[0]) + len(recs[1])
	cuts := []int{3, 103, 105, 109, 9000, end1 - 1, end1 + 3, len(stream)}
	go func() {
		from := 0
		for _, to := range cuts {
			w.Write(stream[from:to])
			from = to
			time.Sleep(5 * time.Millisecond)
		}
		// No close: the peer waits for an answer.
	}()
	r.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i, want := range recs {
		var got []byte
		buf := make([]byte, 64<<10)
		for len(got) < len(want) {
			n, err := rc.Read(buf)
			if err != nil {
				t.Fatalf("record %d: after %d of %d bytes: %v", i, len(got), len(want), err)
			}
			got = append(got, buf[:n]...)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("record %d: read %d bytes that differ from (or run past) the %d sent", i, len(got), len(want))
		}
	}
	if rc.recordReady() {
		t.Fatal("a record is reported ready with nothing buffered")
	}
}
