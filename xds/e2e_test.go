package xds

import (
	"context"
	"reflect"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	mesh "github.com/meshgit/mesh"
)

// TestEndToEndGRPC carries real RPCs from xDS gRPC clients to xDS gRPC servers, all configured
// by our server over loopback, with mTLS from a throwaway CA through the file_watcher
// certificate provider "mesh", and RBAC enforced by gRPC's own engine.
func TestEndToEndGRPC(t *testing.T) {
	ca := newTestCA(t)
	srv := NewServer(testLogger(t))
	addr := startXDS(t, srv)

	lis1, p1 := listenLoopback(t)
	lis2, p2 := listenLoopback(t)
	snap := seal(t, greeterMesh(p1, p2))
	if err := srv.SetSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	greeterCerts := ca.issue(t, "greeter")
	startGreeter(t, lis1, addr, "greeter", "greeter-v1", "v1", greeterCerts)
	startGreeter(t, lis2, addr, "greeter", "greeter-v2", "v2", greeterCerts)

	web := dialService(t, addr, "web", "web-1", "greeter", ca.issue(t, "web"))
	admin := dialService(t, addr, "admin", "admin-1", "greeter", ca.issue(t, "admin"))
	batch := dialService(t, addr, "batch", "batch-1", "greeter", ca.issue(t, "batch"))

	t.Run("allowed source succeeds", func(t *testing.T) {
		if _, code, err := call(web, "/test.Greeter/Hello"); code != codes.OK {
			t.Fatalf("web → greeter: %v", err)
		}
	})
	t.Run("denied source gets PERMISSION_DENIED", func(t *testing.T) {
		if _, code, err := call(batch, "/test.Greeter/Hello"); code != codes.PermissionDenied {
			t.Fatalf("batch → greeter: got %v (%v), want PermissionDenied", code, err)
		}
	})
	t.Run("L7 permission allows one method and not another", func(t *testing.T) {
		if _, code, err := call(admin, "/test.Greeter/Hello"); code != codes.OK {
			t.Fatalf("admin Hello: %v", err)
		}
		if _, code, err := call(admin, "/test.Greeter/Delete"); code != codes.PermissionDenied {
			t.Fatalf("admin Delete: got %v (%v), want PermissionDenied", code, err)
		}
	})
	t.Run("header route sends to v2", func(t *testing.T) {
		for i := 0; i < 20; i++ {
			subset, _, err := call(web, "/test.Greeter/Hello", "x-canary", "1")
			if err != nil || subset != "v2" {
				t.Fatalf("x-canary: 1 went to %q (%v), want v2", subset, err)
			}
		}
	})
	t.Run("90/10 split over 1000 RPCs", func(t *testing.T) {
		const n = 1000
		v2 := 0
		for i := 0; i < n; i++ {
			subset, _, err := call(web, "/test.Greeter/Hello")
			if err != nil {
				t.Fatal(err)
			}
			if subset == "v2" {
				v2++
			}
		}
		// Binomial(1000, 0.1): sd ≈ 9.5; allow 5 sd.
		sd := math.Sqrt(n * 0.1 * 0.9)
		if math.Abs(float64(v2)-100) > 5*sd {
			t.Fatalf("v2 got %d of %d RPCs, want 100 ± %.0f", v2, n, 5*sd)
		}
		t.Logf("v2 got %d of %d", v2, n)
	})
	t.Run("flipping an intention takes effect and is ACKed", func(t *testing.T) {
		waitFor(t, 10*time.Second, "greeter servers up to date", func() bool {
			return upToDate(srv, "greeter-v1") && upToDate(srv, "greeter-v2")
		})
		before, _ := proxyStatus(srv, "greeter-v1")
		webBefore, _ := proxyStatus(srv, "web-1")
		next := greeterMesh(p1, p2)
		allow(next, "batch", "greeter")
		deny(next, "web", "greeter")
		snap2 := seal(t, next)
		if err := srv.SetSnapshot(snap2); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "greeter servers to ACK the new version", func() bool {
			p, _ := proxyStatus(srv, "greeter-v1")
			return p.Version != before.Version && upToDate(srv, "greeter-v1") && upToDate(srv, "greeter-v2")
		})
		after, _ := proxyStatus(srv, "greeter-v1")
		if !strings.HasPrefix(after.Version, snap2.Version+"-") {
			t.Errorf("version %q does not derive from snapshot version %s", after.Version, snap2.Version)
		}
		// The clients' configuration did not change: not pushed (same wire versions), and
		// reported up to date as of the new snapshot at once.
		webAfter, _ := proxyStatus(srv, "web-1")
		if !reflect.DeepEqual(webAfter.Acked, webBefore.Acked) || len(webAfter.Acked) == 0 {
			t.Errorf("web's ACKed versions changed from %v to %v, but its resources did not", webBefore.Acked, webAfter.Acked)
		}
		if !upToDate(srv, "web-1") || !strings.HasPrefix(webAfter.AckedVersion, snap2.Version+"-") {
			t.Errorf("web is not reported up to date as of %s: %+v", snap2.Version, webAfter)
		}
		// Existing connections are drained by the servers; poll (bounded) until the flip shows.
		waitFor(t, 10*time.Second, "batch allowed and web denied", func() bool {
			_, cb, _ := call(batch, "/test.Greeter/Hello")
			_, cw, _ := call(web, "/test.Greeter/Hello")
			return cb == codes.OK && cw == codes.PermissionDenied
		})
	})
	t.Run("NACK is reported with its error", func(t *testing.T) {
		// A ring_hash cluster with a hash function gRPC does not support: valid for Envoy, and
		// rejected by gRPC clients.
		bad := greeterMesh(p1, p2)
		allow(bad, "batch", "greeter")
		deny(bad, "web", "greeter")
		for _, tg := range bad.Chains["greeter"].Targets {
			tg.LoadBalancer = mesh.LBRingHash
		}
		snap3 := seal(t, bad)
		srv.mu.Lock()
		srv.testHookResources = breakRingHash
		srv.mu.Unlock()
		if err := srv.SetSnapshot(snap3); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "a NACK from web", func() bool {
			p, _ := proxyStatus(srv, "web-1")
			return p.LastNack != nil && strings.HasPrefix(p.LastNack.Version, snap3.Version)
		})
		p, _ := proxyStatus(srv, "web-1")
		t.Logf("NACK: %+v", *p.LastNack)
		if !strings.Contains(p.LastNack.Error, "hash") || p.LastNack.TypeURL == "" {
			t.Errorf("NACK error %q does not say what was wrong", p.LastNack.Error)
		}
		if p.AckedVersion == p.Version {
			t.Errorf("acked version %s equals the NACKed version", p.AckedVersion)
		}
		// The client keeps working on its last good configuration.
		if _, code, err := call(batch, "/test.Greeter/Hello"); code != codes.OK {
			t.Fatalf("after NACK: %v", err)
		}
	})
}

// breakRingHash gives gRPC clients' ring_hash clusters a hash function gRPC does not support
// (Envoy does, so the resource passes validation).
func breakRingHash(p Proxy, r *Resources) {
	if p.Shape != ShapeGRPC {
		return
	}
	for _, c := range r.Clusters {
		if rh := c.GetRingHashLbConfig(); rh != nil {
			rh.HashFunction = clusterv3.Cluster_RingHashLbConfig_MURMUR_HASH_2
		}
	}
}

// TestEndToEndWrongServerIdentity: a client refuses a server whose certificate names another
// service, because the cluster's TLS checks the target's SPIFFE ID.
func TestEndToEndWrongServerIdentity(t *testing.T) {
	ca := newTestCA(t)
	srv := NewServer(testLogger(t))
	addr := startXDS(t, srv)
	lis1, p1 := listenLoopback(t)
	lis2, p2 := listenLoopback(t)
	if err := srv.SetSnapshot(seal(t, greeterMesh(p1, p2))); err != nil {
		t.Fatal(err)
	}
	impostor := ca.issue(t, "batch") // a real mesh identity, but not greeter's
	startGreeter(t, lis1, addr, "greeter", "greeter-v1", "v1", impostor)
	startGreeter(t, lis2, addr, "greeter", "greeter-v2", "v2", impostor)
	web := dialService(t, addr, "web", "web-1", "greeter", ca.issue(t, "web"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := web.Invoke(ctx, "/test.Greeter/Hello", wrapperspb.String("hi"), &wrapperspb.StringValue{})
	if status.Code(err) == codes.OK {
		t.Fatal("client accepted a server with the wrong SPIFFE ID")
	}
	t.Logf("refused as expected: %v", err)
}

// TestEndToEndFailover: EDS priorities carry failover. A gRPC client sends everything to the
// primary datacenter's endpoint (priority 0) and, when it goes away, to the failover
// datacenter's (priority 1).
func TestEndToEndFailover(t *testing.T) {
	ca := newTestCA(t)
	srv := NewServer(testLogger(t))
	addr := startXDS(t, srv)
	lis1, p1 := listenLoopback(t)
	lis2, p2 := listenLoopback(t)
	m := newSnap(mesh.Deny)
	addService(m, "greeter", mesh.ProtocolGRPC, 8080, ep("127.0.0.1", p1, "dc1"), ep("127.0.0.1", p2, "dc2"))
	addService(m, "web", mesh.ProtocolGRPC, 8080)
	addUpstream(m, "web", "greeter", 9191)
	primary, backup := mesh.TargetID("", "greeter", "dc1"), mesh.TargetID("", "greeter", "dc2")
	setChain(m, "greeter", nil, []mesh.ChainRoute{{Splits: []mesh.TargetWeight{{Target: primary, Weight: mesh.TotalWeight}}}},
		map[string][]string{primary: {backup}})
	allow(m, "web", "greeter")
	if err := srv.SetSnapshot(seal(t, m)); err != nil {
		t.Fatal(err)
	}
	certs := ca.issue(t, "greeter")
	dc1 := startGreeter(t, lis1, addr, "greeter", "greeter-dc1", "dc1", certs)
	startGreeter(t, lis2, addr, "greeter", "greeter-dc2", "dc2", certs)
	web := dialService(t, addr, "web", "web-1", "greeter", ca.issue(t, "web"))
	for i := 0; i < 20; i++ {
		if got, _, err := call(web, "/test.Greeter/Hello"); got != "dc1" {
			t.Fatalf("RPC %d went to %q (%v), want the primary dc1", i, got, err)
		}
	}
	dc1.Stop()
	waitFor(t, 15*time.Second, "failover to dc2", func() bool {
		got, _, _ := call(web, "/test.Greeter/Hello")
		return got == "dc2"
	})
}
