package xds

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/xds"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/compiler"
)

// TestGRPCAcceptsClientConfig: real gRPC xDS clients of every service with upstreams, in the rich
// fixture (also with every mesh.tls setting, which gRPC would NACK as tls_params) and in repo-example, fetch their listeners, routes, clusters and endpoints and ACK
// them all: gRPC NACKs nothing we render (Envoy-only fields included in the shared route shape,
// ring hash, least request, failover priorities, header and query matches, retries).
func TestGRPCAcceptsClientConfig(t *testing.T) {
	snaps := map[string]*mesh.Snapshot{"rich": seal(t, richMesh()), "rich-tls": seal(t, tlsMesh())}
	if s, err := compiler.CompileDir(context.Background(), filepath.Join("..", "repo-example")); err == nil {
		snaps["repo-example"] = s
	} else {
		t.Errorf("compile repo-example: %v", err)
	}
	for name, snap := range snaps {
		t.Run(name, func(t *testing.T) {
			srv := NewServer(testLogger(t))
			addr := startXDS(t, srv)
			if err := srv.SetSnapshot(snap); err != nil {
				t.Fatal(err)
			}
			var nodes []string
			for _, svc := range snap.ServiceNames() {
				ups := upstreams(snap, svc)
				if len(ups) == 0 {
					continue
				}
				nodeID := svc + "-accept"
				b := grpcBootstrap(t, addr, svc, nodeID, t.TempDir())
				rb, err := xds.NewXDSResolverWithConfigForTesting(b)
				if err != nil {
					t.Fatal(err)
				}
				for _, u := range ups {
					cc, err := grpc.NewClient("xds:///"+u.Service, grpc.WithResolvers(rb), grpc.WithTransportCredentials(insecure.NewCredentials()))
					if err != nil {
						t.Fatal(err)
					}
					cc.Connect()
					t.Cleanup(func() { cc.Close() })
				}
				nodes = append(nodes, nodeID)
			}
			for _, id := range nodes {
				waitFor(t, 15*time.Second, fmt.Sprintf("%s to ACK listeners, routes, clusters and endpoints", id), func() bool {
					p, ok := proxyStatus(srv, id)
					if ok && p.LastNack != nil {
						t.Fatalf("%s NACKed %s: %s", id, p.LastNack.TypeURL, p.LastNack.Error)
					}
					return ok && p.AckedVersion == p.Version && p.Acked["listeners"] != "" && p.Acked["routes"] != "" &&
						p.Acked["clusters"] != "" && p.Acked["endpoints"] != ""
				})
			}
			t.Logf("%d gRPC clients ACKed everything", len(nodes))
		})
	}
}

// TestGRPCAcceptsServerConfig: every endpoint of every service, in the rich fixture (also with
// every mesh.tls setting) and in repo-example, moved to a loopback port and served by a real gRPC xDS server: each gets its
// listener (mTLS, the RBAC rendered from the service's intentions) and becomes SERVING.
func TestGRPCAcceptsServerConfig(t *testing.T) {
	snaps := map[string]*mesh.Snapshot{"rich": richMesh(), "rich-tls": tlsMesh()}
	if s, err := compiler.CompileDir(context.Background(), filepath.Join("..", "repo-example")); err == nil {
		snaps["repo-example"] = s
	} else {
		t.Errorf("compile repo-example: %v", err)
	}
	ca := newTestCA(t)
	for name, snap := range snaps {
		t.Run(name, func(t *testing.T) {
			type server struct {
				lis           net.Listener
				service, node string
			}
			var servers []server
			for _, svcName := range snap.ServiceNames() {
				svc := snap.Services[svcName]
				for i := range svc.Endpoints {
					lis, port := listenLoopback(t)
					svc.Endpoints[i].Address, svc.Endpoints[i].Port = "127.0.0.1", port
					servers = append(servers, server{lis, svcName, fmt.Sprintf("%s-%d", svcName, i)})
				}
			}
			srv := NewServer(testLogger(t))
			addr := startXDS(t, srv)
			if err := srv.SetSnapshot(seal(t, snap)); err != nil {
				t.Fatal(err)
			}
			certs := map[string]string{}
			for _, s := range servers {
				if certs[s.service] == "" {
					certs[s.service] = ca.issue(t, s.service)
				}
				startGreeter(t, s.lis, addr, s.service, s.node, s.node, certs[s.service])
			}
			for _, s := range servers {
				if p, _ := proxyStatus(srv, s.node); p.LastNack != nil {
					t.Errorf("%s NACKed: %s", s.node, p.LastNack.Error)
				}
			}
			t.Logf("%d gRPC xDS servers SERVING", len(servers))
		})
	}
}

// tlsMesh is richMesh with every mesh.tls setting.
func tlsMesh() *mesh.Snapshot {
	s := richMesh()
	s.Mesh.TLS = mesh.TLS{MinVersion: "TLSv1_2", MaxVersion: "TLSv1_3",
		CipherSuites: []string{"[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]", "ECDHE-ECDSA-AES256-GCM-SHA384"}}
	return s
}
