package xds

import (
	"errors"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
)

// TestProxySyncStates: per resource type, a response not yet ACKed is STALE, an ACKed one
// SYNCED, a NACKed one NACK with the proxy's error; the proxy is as bad as its worst type.
func TestProxySyncStates(t *testing.T) {
	srv, addr := servingServer(t)
	web := newRawADS(t, dialRaw(t, addr))
	node := envoyNode("web-1", "web")
	node.Metadata = mustStruct(map[string]any{CertDirMetadataKey: "/var/run/mesh/web"})
	web.send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType})
	rc := web.mustRecv(resourcev3.ClusterType)
	state := func() ProxyStatus {
		ps, ok := proxyStatus(srv, "web-1")
		if !ok {
			t.Fatal("web-1 not listed")
		}
		return ps
	}
	if ps := state(); ps.Sync != SyncStale || ps.Types["clusters"].State != SyncStale || ps.Types["clusters"].Sent != rc.VersionInfo {
		t.Fatalf("sent, not ACKed: %+v", ps)
	}
	web.ack(rc)
	waitFor(t, 5*time.Second, "clusters SYNCED", func() bool { return state().Types["clusters"].State == SyncSynced })
	if ps := state(); ps.Sync != SyncSynced || ps.Types["clusters"].Acked != rc.VersionInfo {
		t.Fatalf("ACKed: %+v", ps)
	}
	web.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType})
	rl := web.mustRecv(resourcev3.ListenerType)
	web.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResponseNonce: rl.Nonce,
		ErrorDetail: &rpcstatus.Status{Code: 3, Message: "listener public_listener: bad filter"}})
	waitFor(t, 5*time.Second, "listeners NACK", func() bool { return state().Types["listeners"].State == SyncNack })
	ps := state()
	if ps.Sync != SyncNack || ps.Types["listeners"].Error != "listener public_listener: bad filter" || ps.Types["clusters"].State != SyncSynced {
		t.Fatalf("NACKed listeners: %+v", ps)
	}
}

// TestProxyConfig: the configuration set for a node, by type; the leaf secret names the key's
// file and never carries a key; an unknown node is ErrUnknownNode.
func TestProxyConfig(t *testing.T) {
	c := newMeshCA(t)
	srv, addr := servingServer(t)
	b, _ := c.Bundle()
	if err := srv.SetTrustBundle([]byte(b.BundlePEM)); err != nil {
		t.Fatal(err)
	}
	web := newRawADS(t, dialRaw(t, addr))
	node := envoyNode("web-1", "web")
	node.Metadata = mustStruct(map[string]any{CertDirMetadataKey: "/var/run/mesh/web"})
	web.send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType})
	web.ack(web.mustRecv(resourcev3.ClusterType))
	pc, err := srv.ProxyConfig("web-1")
	if err != nil {
		t.Fatal(err)
	}
	if pc.Service != "web" || pc.Shape != ShapeEnvoy || len(pc.Resources["clusters"]) == 0 || len(pc.Resources["listeners"]) == 0 {
		t.Fatalf("config: %+v", pc)
	}
	var leaf *tlsv3.Secret
	for _, r := range pc.Resources["secrets"] {
		if s := r.(*tlsv3.Secret); s.Name == SecretLeaf {
			leaf = s
		}
	}
	if leaf == nil || leaf.GetTlsCertificate().GetPrivateKey().GetFilename() != "/var/run/mesh/web/key.pem" {
		t.Fatalf("leaf secret: %v", leaf)
	}
	if _, err := srv.ProxyConfig("nosuch"); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("unknown node: %v", err)
	}
	inline := &tlsv3.Secret{Name: "x", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		PrivateKey: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "-----BEGIN EC PRIVATE KEY-----"}}}}}
	if err := noKeyMaterial(inline); !errors.Is(err, ErrKeyMaterial) {
		t.Fatalf("an inline key passed: %v", err)
	}
}
