package xds

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

func TestSecrets(t *testing.T) {
	if s := secrets(Proxy{Service: "web", Shape: ShapeEnvoy}, nil); len(s) != 0 {
		t.Fatalf("no directory and no bundle rendered %d secrets", len(s))
	}
	if s := secrets(Proxy{Service: "web", Shape: ShapeGRPC, CertDir: "/d"}, []byte("x")); len(s) != 0 {
		t.Fatalf("gRPC got %d secrets; it reads its certificate provider files", len(s))
	}
	got := secrets(Proxy{Service: "web", Shape: ShapeEnvoy, CertDir: "/var/run/mesh/web"}, []byte("ROOTS"))
	if len(got) != 2 || got[0].Name != SecretLeaf || got[1].Name != SecretRoots {
		t.Fatalf("secrets %v", got)
	}
	for _, s := range got {
		if err := s.ValidateAll(); err != nil {
			t.Fatal(err)
		}
	}
	tc := got[0].GetTlsCertificate()
	if tc.GetPrivateKey().GetFilename() != "/var/run/mesh/web/key.pem" || tc.GetCertificateChain().GetFilename() != "/var/run/mesh/web/cert.pem" ||
		tc.GetWatchedDirectory().GetPath() != "/var/run/mesh/web" {
		t.Fatalf("leaf secret %v", tc)
	}
	if len(tc.GetPrivateKey().GetInlineBytes()) > 0 || len(tc.GetPrivateKey().GetInlineString()) > 0 {
		t.Fatal("the leaf secret carries a key")
	}
}

func TestParseBundle(t *testing.T) {
	c := newMeshCA(t)
	b, err := c.Bundle()
	if err != nil {
		t.Fatal(err)
	}
	tb, err := parseBundle([]byte(b.BundlePEM))
	if err != nil || tb.n != 1 || !bytes.Equal(tb.pem, []byte(b.BundlePEM)) {
		t.Fatalf("bundle: %v, %+v", err, tb)
	}
	key := "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgsecretsecret\n-----END PRIVATE KEY-----\n"
	leafPEM := caLeaf(t, c, "web").Certificate[0]
	for name, in := range map[string][]byte{
		"empty":    nil,
		"key":      []byte(b.BundlePEM + key),
		"garbage":  []byte(b.BundlePEM + "hello"),
		"not a CA": pemCert(leafPEM),
	} {
		_, err := parseBundle(in)
		if !errors.Is(err, ErrBadBundle) {
			t.Errorf("%s: got %v, want ErrBadBundle", name, err)
		}
		if err != nil && strings.Contains(err.Error(), "secretsecret") {
			t.Errorf("%s: the error quotes the key: %v", name, err)
		}
	}
}

// TestTrustBundleRotation: Envoy proxies get ROOTCA (the bundle) and their default leaf by
// file reference over ADS; a new bundle (CA rotation) is pushed to them, only the secrets
// change, and gRPC proxies are not pushed.
func TestTrustBundleRotation(t *testing.T) {
	c := newMeshCA(t)
	srv, addr := servingServer(t)
	b1, _ := c.Bundle()
	if err := srv.SetTrustBundle([]byte(b1.BundlePEM)); err != nil {
		t.Fatal(err)
	}
	if srv.TrustPool() == nil {
		t.Fatal("no trust pool")
	}
	cc := dialRaw(t, addr)
	web := newRawADS(t, cc)
	node := envoyNode("web-1", "web")
	node.Metadata = mustStruct(map[string]any{CertDirMetadataKey: "/var/run/mesh/web"})
	web.send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.SecretType, ResourceNames: []string{SecretLeaf, SecretRoots}})
	r1 := web.mustRecv(resourcev3.SecretType)
	leaf, roots := secretsOf(t, r1)
	if leaf.GetTlsCertificate().GetPrivateKey().GetFilename() != "/var/run/mesh/web/key.pem" {
		t.Fatalf("default: %v", leaf)
	}
	if string(roots.GetValidationContext().GetTrustedCa().GetInlineBytes()) != b1.BundlePEM {
		t.Fatal("ROOTCA is not the bundle")
	}
	web.ack(r1)
	web.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType})
	rc := web.mustRecv(resourcev3.ClusterType)
	web.ack(rc)
	waitFor(t, 5*time.Second, "web up to date", func() bool { return upToDate(srv, "web-1") })

	grpcNode := &corev3.Node{Id: "api-grpc", Cluster: "api", UserAgentName: "gRPC Go"}
	g := newRawADS(t, cc)
	g.send(&discoveryv3.DiscoveryRequest{Node: grpcNode, TypeUrl: resourcev3.ClusterType})
	gr := g.mustRecv(resourcev3.ClusterType)
	g.ack(gr)

	if err := c.Rotate(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	b2, _ := c.Bundle()
	if err := srv.SetTrustBundle([]byte(b2.BundlePEM)); err != nil {
		t.Fatal(err)
	}
	r2 := web.mustRecv(resourcev3.SecretType)
	if r2.VersionInfo == r1.VersionInfo {
		t.Fatal("same version after a rotation")
	}
	_, roots2 := secretsOf(t, r2)
	if string(roots2.GetValidationContext().GetTrustedCa().GetInlineBytes()) != b2.BundlePEM || strings.Count(b2.BundlePEM, "BEGIN CERTIFICATE") != 2 {
		t.Fatal("ROOTCA after the rotation is not the new bundle with both roots")
	}
	web.ack(r2)
	if r, err := web.recv(300 * time.Millisecond); err != nil || r != nil {
		t.Fatalf("web got more than the secrets after a rotation: %v %v", r, err)
	}
	if r, err := g.recv(300 * time.Millisecond); err != nil || r != nil {
		t.Fatalf("the gRPC proxy was pushed after a rotation: %v %v", r, err)
	}
	waitFor(t, 5*time.Second, "web up to date after the rotation", func() bool { return upToDate(srv, "web-1") })
	// The same bundle again pushes nothing.
	if err := srv.SetTrustBundle([]byte(b2.BundlePEM)); err != nil {
		t.Fatal(err)
	}
	if r, err := web.recv(300 * time.Millisecond); err != nil || r != nil {
		t.Fatalf("an unchanged bundle was pushed: %v %v", r, err)
	}
	if err := srv.SetTrustBundle([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")); !errors.Is(err, ErrBadBundle) {
		t.Fatalf("a key as bundle: %v", err)
	}
}

func secretsOf(t *testing.T, r *discoveryv3.DiscoveryResponse) (leaf, roots *tlsv3.Secret) {
	t.Helper()
	for _, a := range r.Resources {
		s := &tlsv3.Secret{}
		if err := a.UnmarshalTo(s); err != nil {
			t.Fatal(err)
		}
		switch s.Name {
		case SecretLeaf:
			leaf = s
		case SecretRoots:
			roots = s
		}
	}
	if leaf == nil || roots == nil {
		t.Fatalf("secrets response lacks %s or %s: %v", SecretLeaf, SecretRoots, r)
	}
	return leaf, roots
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// mesh.tls reaches every TLS context Envoy gets, and none that gRPC gets (gRPC's xDS client
// NACKs tls_params; it negotiates with Go's defaults, as mesh validate warns).
func TestTLSParamsEnvoyOnly(t *testing.T) {
	snap := seal(t, tlsMesh())
	for _, svc := range snap.ServiceNames() {
		for _, shape := range []Shape{ShapeEnvoy, ShapeGRPC} {
			res, err := Render(snap, Proxy{Service: svc, Shape: shape, CertDir: "/certs"})
			if err != nil {
				t.Fatal(err)
			}
			var params []map[string]any
			for _, list := range [][]proto.Message{messages(res.Listeners), messages(res.Clusters)} {
				var v any
				if err := json.Unmarshal(goldenJSON(t, list), &v); err != nil {
					t.Fatal(err)
				}
				walkJSON(v, "", func(key string, val any) {
					if m, ok := val.(map[string]any); ok && key == "tlsParams" {
						params = append(params, m)
					}
				})
			}
			if shape == ShapeGRPC {
				if len(params) != 0 {
					t.Errorf("%s/grpc: %d TLS contexts with tls_params, want none", svc, len(params))
				}
				continue
			}
			if len(params) == 0 {
				t.Errorf("%s/envoy: no TLS context with tls_params", svc)
			}
			for _, p := range params {
				got, _ := json.Marshal(p)
				want := `{"cipherSuites":["[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]","ECDHE-ECDSA-AES256-GCM-SHA384"],"tlsMaximumProtocolVersion":"TLSv1_3","tlsMinimumProtocolVersion":"TLSv1_2"}`
				if string(got) != want {
					t.Errorf("%s/envoy: tls_params %s, want %s", svc, got, want)
				}
			}
		}
	}
}
