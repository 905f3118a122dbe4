package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshgit/mesh/ca"
)

// sidecarMesh: web calls api over tcp through its upstream listener; api's sidecar listens on
// apiPub in front of the application on apiApp.
const sidecarMesh = `package mesh

mesh: {
	name:             "proxy"
	trustDomain:      "shop.mesh"
	datacenter:       "dc1"
	datacenters:      ["dc1"]
	defaultIntention: "deny"
}

services: api: {protocol: "tcp", port: %d, endpoints: [{address: "127.0.0.1", port: %d}]}
services: web: {protocol: "tcp", port: %d, endpoints: [{address: "127.0.0.1", port: %d}], upstreams: api: localPort: %d}
services: batch: {protocol: "tcp", port: 8080}

intentions: api: web: action: "%s"
`

type sidecars struct {
	e                        *env
	app                      *echoServer
	apiPub, webPub, webUp    int
	webApp, appPort          int
	web, api                 *Proxy
	apiDir, webDir, batchDir string
}

func (s *sidecars) mesh(action string) string {
	return fmt.Sprintf(sidecarMesh, s.appPort, s.apiPub, s.webApp, s.webPub, s.webUp, action)
}

func (s *sidecars) upstream() string { return fmt.Sprintf("127.0.0.1:%d", s.webUp) }

func newSidecars(t testing.TB, action string) *sidecars {
	app := newEchoServer(t)
	s := newSidecarsFor(t, action, app.port())
	s.app = app
	return s
}

// newSidecarsFor starts web's and api's sidecars, api's in front of the application on appPort.
func newSidecarsFor(t testing.TB, action string, appPort int) *sidecars {
	e := newEnv(t)
	s := &sidecars{e: e, appPort: appPort, apiPub: freePort(t), webPub: freePort(t), webUp: freePort(t), webApp: freePort(t)}
	s.apiDir, s.webDir, s.batchDir = e.certDir("api"), e.certDir("web"), e.certDir("batch")
	e.commit(s.mesh(action))
	s.api = e.proxy("api", s.apiDir)
	s.web = e.proxy("web", s.webDir)
	return s
}

// TestSidecarsMoveBytesOverMTLS: two built-in proxies between two plain TCP endpoints move real
// bytes both ways; the hop between them is mTLS that only a caller the intentions allow gets
// through; a deny committed to Git closes the way.
func TestSidecarsMoveBytesOverMTLS(t *testing.T) {
	s := newSidecars(t, "allow")
	eventually(t, 10*time.Second, "web reaches api through both sidecars", func() error {
		return echoes(s.upstream(), []byte("ping"))
	})
	payload := make([]byte, 4<<20)
	rand.Read(payload)
	if err := echoes(s.upstream(), payload); err != nil {
		t.Fatalf("4 MiB through the sidecars: %v", err)
	}

	apiPub := fmt.Sprintf("127.0.0.1:%d", s.apiPub)
	before := s.app.conns.Load()
	// Plaintext to the public listener: no byte reaches the application.
	if got, _ := roundTrip(apiPub, []byte("hello"), 2*time.Second); bytes.Contains(got, []byte("hello")) {
		t.Fatalf("plaintext through the public listener echoed: %q", got)
	}
	// A valid certificate of a service with no intention: the handshake completes, RBAC closes.
	if err := tlsEcho(apiPub, s.batchDir, "api"); err == nil {
		t.Fatal("batch reached api without an intention")
	}
	// A certificate of another CA: the handshake fails.
	other := ca.New(ca.Config{})
	if err := other.Init(context.Background(), "shop.mesh", nil); err != nil {
		t.Fatal(err)
	}
	if err := tlsEcho(apiPub, writeLeaf(t, other, "web"), "api"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a certificate of another CA: err = %v, want a certificate error", err)
	}
	if n := s.app.conns.Load(); n != before {
		t.Fatalf("refused callers opened %d connections to the application", n-before)
	}
	// web's own certificate, directly: allowed (the intention names web's SPIFFE ID).
	if err := tlsEcho(apiPub, s.webDir, "api"); err != nil {
		t.Fatalf("web's certificate at api's public listener: %v", err)
	}

	// A deny in Git: the proxy ACKs the new RBAC of its public listener (ECDS; the listeners do
	// not change) and the connection is refused.
	var acked map[string]string
	eventually(t, 10*time.Second, "api ACKed its RBAC", func() error {
		if acked = s.api.Status().Acked; acked[resourcev3.ExtensionConfigType] == "" {
			return fmt.Errorf("acked %v", acked)
		}
		return nil
	})
	s.e.commit(s.mesh("deny"))
	eventually(t, 10*time.Second, "deny applied", func() error {
		if v := s.api.Status().Acked[resourcev3.ExtensionConfigType]; v == acked[resourcev3.ExtensionConfigType] {
			return fmt.Errorf("api's sidecar still runs RBAC %s", v)
		}
		return nil
	})
	if v := s.api.Status().Acked[resourcev3.ListenerType]; v != acked[resourcev3.ListenerType] {
		t.Errorf("the deny changed api's listeners (%s, then %s): only its RBAC extension config should", acked[resourcev3.ListenerType], v)
	}
	got, _ := roundTrip(s.upstream(), []byte("ping"), 5*time.Second)
	if len(got) != 0 {
		t.Fatalf("after the deny, web got %q back", got)
	}
	if err := tlsEcho(apiPub, s.webDir, "api"); err == nil {
		t.Fatal("after the deny, web's certificate still reaches api")
	}
	if st := s.api.Status(); len(st.LastNACK) != 0 {
		t.Fatalf("api NACKed: %v", st.LastNACK)
	}
}

// tlsEcho dials addr with the certificate of dir as a sidecar would (SNI-free, server
// verification as the outbound path does) and checks that a payload comes back.
func tlsEcho(addr, dir, service string) error {
	cf := newCertFiles(dir)
	sans := map[string]bool{"spiffe://shop.mesh/ns/default/dc/dc1/svc/" + service: true}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	tc := tls.Client(c, cf.clientTLS(&upstreamTLS{sans: sans}))
	if err := tc.Handshake(); err != nil {
		return err
	}
	if _, err := tc.Write([]byte("hi")); err != nil {
		return err
	}
	tc.CloseWrite()
	got, err := io.ReadAll(tc)
	if err != nil {
		return err
	}
	if string(got) != "hi" {
		return fmt.Errorf("%w: got %q", errNoEcho, got)
	}
	return nil
}

// TestOutboundVerifiesSPIFFEID: an endpoint of api that presents another service's certificate
// (valid, same CA) gets no byte of the caller's.
func TestOutboundVerifiesSPIFFEID(t *testing.T) {
	e := newEnv(t)
	imp := e.certDir("batch")
	cf := newCertFiles(imp)
	srv := cf.serverTLS()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(3 * time.Second))
				b, _ := io.ReadAll(c)
				got <- b
			}()
		}
	}()
	webUp := freePort(t)
	e.commit(fmt.Sprintf(sidecarMesh, 1, ln.Addr().(*net.TCPAddr).Port, freePort(t), freePort(t), webUp, "allow"))
	web := e.proxy("web", e.certDir("web"))
	eventually(t, 10*time.Second, "web's upstream listener", func() error {
		if _, ok := web.Status().Listeners["api:127.0.0.1:"+fmt.Sprint(webUp)]; !ok {
			return fmt.Errorf("listeners %v", web.Status().Listeners)
		}
		if web.Status().Acked[resourcev3.EndpointType] == "" {
			return fmt.Errorf("no endpoints yet")
		}
		return nil
	})
	if b, _ := roundTrip(fmt.Sprintf("127.0.0.1:%d", webUp), []byte("secret"), 3*time.Second); len(b) != 0 {
		t.Fatalf("the impostor answered %q", b)
	}
	select {
	case b := <-got:
		if bytes.Contains(b, []byte("secret")) {
			t.Fatal("the impostor read the payload")
		}
	case <-time.After(3 * time.Second):
	}
}

// TestNACKsHTTPListener: an http service's listeners carry an HTTP connection manager, which the
// built-in proxy cannot honour: it NACKs with an error that says so, and the server records it.
func TestNACKsHTTPListener(t *testing.T) {
	e := newEnv(t)
	e.commit(strings.Replace(fmt.Sprintf(sidecarMesh, freePort(t), freePort(t), freePort(t), freePort(t), freePort(t), "allow"),
		`services: api: {protocol: "tcp"`, `services: api: {protocol: "http"`, 1))
	api := e.proxy("api", e.certDir("api"))
	eventually(t, 10*time.Second, "api NACKs its listeners", func() error {
		if msg := api.Status().LastNACK[resourcev3.ListenerType]; !strings.Contains(msg, "HTTP connection manager") {
			return fmt.Errorf("last NACK %q", msg)
		}
		return nil
	})
	if n := len(api.Status().Listeners); n != 0 {
		t.Fatalf("%d listeners bound after a NACK", n)
	}
	eventually(t, 5*time.Second, "the server records the NACK", func() error {
		for _, ps := range e.xs.Proxies() {
			if ps.NodeID == "api-1" && ps.LastNack != nil && strings.Contains(fmt.Sprint(ps.LastNack), "HTTP connection manager") {
				return nil
			}
		}
		return fmt.Errorf("proxies %+v", e.xs.Proxies())
	})
	if api.Status().Acked[resourcev3.ClusterType] == "" {
		t.Fatal("the clusters it can honour were not ACKed")
	}
}
