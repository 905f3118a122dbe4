package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/ca"
)

// twoDCMesh: api runs only in dc2; web in dc1 calls it there through the mesh gateways.
const twoDCMesh = `package mesh

mesh: {
	name:             "twodc"
	trustDomain:      "shop.mesh"
	datacenter:       "dc1"
	datacenters:      ["dc1", "dc2"]
	defaultIntention: "deny"
	meshGateway: mode: "local"
}

services: api: {protocol: "tcp", port: %d, endpoints: [{address: "127.0.0.1", port: %d, datacenter: "dc2"}]}
services: web: {protocol: "tcp", port: %d, endpoints: [{address: "127.0.0.1", port: %d, datacenter: "dc1"}], upstreams: api: {localPort: %d, datacenter: "dc2"}}

intentions: api: web: action: "%s"
`

// tap is a plain TCP relay that records every byte going through it: the WAN link between the
// two gateways.
type tap struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (tp *tap) Write(b []byte) (int, error) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.buf.Write(b)
}

func (tp *tap) seen() []byte {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return bytes.Clone(tp.buf.Bytes())
}

func startTap(t *testing.T, target string) (*tap, int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	tp := &tap{}
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
				go func() { io.Copy(io.MultiWriter(up, tp), c); up.(*net.TCPConn).CloseWrite() }()
				io.Copy(io.MultiWriter(c, tp), up)
				c.Close()
				up.Close()
			}()
		}
	}()
	return tp, ln.Addr().(*net.TCPAddr).Port
}

// TestTwoDatacentersThroughGateways: web in dc1 reaches api, which runs only in dc2, through
// web's sidecar, dc1's gateway, dc2's gateway and api's sidecar, all built-in proxies, each
// datacenter served by its own xDS server from the same Git commit. The session is mTLS end to
// end: the gateways hold no certificate, the WAN link carries the target's SNI but never the
// payload, and dc2's intentions decide: a deny in Git refuses the connection across datacenters.
func TestTwoDatacentersThroughGateways(t *testing.T) {
	e := newEnv(t) // dc1: its CA, Git repository and xDS server
	xs2, xds2 := serveXDS(t, e.log.With("component", "xds-dc2"))
	ca2 := ca.New(ca.Config{Store: ca.NewMemStore(e.ca.State()), Datacenter: "dc2"}) // one CA, dc2's leaves

	app := newEchoServer(t)
	apiPub, webPub, webUp, webApp := freePort(t), freePort(t), freePort(t), freePort(t)
	gw1, gw2 := freePort(t), freePort(t)
	wan, wanPort := startTap(t, fmt.Sprintf("127.0.0.1:%d", gw2))
	gateways := map[string][]mesh.Gateway{
		"dc1": {{Service: "gateway", Address: "127.0.0.1", Port: gw1}},
		"dc2": {{Service: "gateway", Address: "127.0.0.1", Port: gw2, WANAddress: "127.0.0.1", WANPort: wanPort}},
	}
	e.serve = func(snap *mesh.Snapshot) {
		dc1 := snap.WithMeshGateways(gateways)
		dc2 := dc1.WithServices(dc1.Services)
		dc2.Mesh.Datacenter = "dc2"
		if err := e.xs.SetSnapshot(dc1); err != nil {
			t.Fatal(err)
		}
		if err := xs2.SetSnapshot(dc2); err != nil {
			t.Fatal(err)
		}
	}
	src := func(action string) string {
		return fmt.Sprintf(twoDCMesh, app.port(), apiPub, webApp, webPub, webUp, action)
	}
	e.commit(src("allow"))
	e.proxyWith(Config{XDSAddr: e.xdsAddr, Service: "web", CertDir: e.certDir("web")})
	e.proxyWith(Config{XDSAddr: e.xdsAddr, Service: "gateway", Kind: mesh.KindMeshGateway})
	e.proxyWith(Config{XDSAddr: xds2, Service: "gateway", Kind: mesh.KindMeshGateway})
	api := e.proxyWith(Config{XDSAddr: xds2, Service: "api", CertDir: writeLeaf(t, ca2, "api")})

	up := fmt.Sprintf("127.0.0.1:%d", webUp)
	eventually(t, 10*time.Second, "web in dc1 reaches api in dc2", func() error { return echoes(up, []byte("ping")) })
	secret := bytes.Repeat([]byte("the-payload-only-web-and-api-read "), 1000)
	if err := echoes(up, secret); err != nil {
		t.Fatal(err)
	}
	seen := wan.seen()
	if !bytes.Contains(seen, []byte("api.default.dc2.internal.shop.mesh")) {
		t.Fatal("the WAN link did not carry the target's SNI")
	}
	if bytes.Contains(seen, []byte("the-payload-only")) || bytes.Contains(seen, []byte("ping")) {
		t.Fatal("the WAN link between the gateways carried the payload in clear")
	}
	if n := app.conns.Load(); n < 2 {
		t.Fatalf("api's application saw %d connections", n)
	}

	// The deny reaches api's sidecar as the RBAC extension config of its public listener.
	var acked string
	eventually(t, 10*time.Second, "api ACKed its RBAC", func() error {
		if acked = api.Status().Acked[resourcev3.ExtensionConfigType]; acked == "" {
			return fmt.Errorf("no RBAC ACKed")
		}
		return nil
	})
	e.commit(src("deny"))
	eventually(t, 10*time.Second, "dc2 applies the deny", func() error {
		if api.Status().Acked[resourcev3.ExtensionConfigType] == acked {
			return fmt.Errorf("api still runs RBAC %s", acked)
		}
		return nil
	})
	if got, _ := roundTrip(up, []byte("ping"), 5*time.Second); len(got) != 0 {
		t.Fatalf("after the deny, web got %q from dc2", got)
	}
}

// TestGatewayFollowsEndpoints: a gateway's local targets follow the catalog: when api's
// endpoint moves (a new sidecar on another port), the gateway routes to the new one.
func TestGatewayFollowsEndpoints(t *testing.T) {
	e := newEnv(t)
	app := newEchoServer(t)
	gw := freePort(t)
	gateways := map[string][]mesh.Gateway{"dc1": {{Service: "gateway", Address: "127.0.0.1", Port: gw}}}
	e.serve = func(snap *mesh.Snapshot) {
		if err := e.xs.SetSnapshot(snap.WithMeshGateways(gateways)); err != nil {
			t.Fatal(err)
		}
	}
	webDir, apiDir := e.certDir("web"), e.certDir("api")
	e.proxyWith(Config{XDSAddr: e.xdsAddr, Service: "gateway", Kind: mesh.KindMeshGateway})
	viaGateway := func() error {
		cf := newCertFiles(webDir)
		c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", gw), cf.clientTLS(&upstreamTLS{
			sni: "api.default.dc1.internal.shop.mesh", sans: map[string]bool{"spiffe://shop.mesh/ns/default/dc/dc1/svc/api": true}}))
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte("hi")); err != nil {
			return err
		}
		c.CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "hi" {
			return fmt.Errorf("got %q, %v", got, err)
		}
		return nil
	}
	for i := range 2 {
		pub := freePort(t)
		e.commit(fmt.Sprintf(sidecarMesh, app.port(), pub, freePort(t), freePort(t), freePort(t), "allow"))
		api := e.proxyWith(Config{XDSAddr: e.xdsAddr, Service: "api", CertDir: apiDir})
		eventually(t, 10*time.Second, fmt.Sprintf("api through the gateway, endpoint %d", i), viaGateway)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		api.Close(ctx) // the next round's api listens elsewhere
		cancel()
	}
}
