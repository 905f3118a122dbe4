package xds

import (
	"bytes"
	"path/filepath"
	"regexp"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	mesh "github.com/meshgit/mesh"
)

// TestEnvoyBootstrapTLS: with a certificate directory the node says where the agent's files
// are; with XDSTLS the xDS cluster presents the agent's certificate and checks the server's
// SPIFFE ID, both through file-based SDS whose files EnvoySDSFiles makes.
func TestEnvoyBootstrapTLS(t *testing.T) {
	const dir = "/var/run/mesh/web"
	b, err := EnvoyBootstrap(EnvoyBootstrapOptions{Service: "web", ProxyID: "web-1", XDSAddr: "10.0.0.9:8502",
		CertDir: dir, XDSTLS: true, TrustDomain: testTrustDomain})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, filepath.Join("testdata", "golden", "bootstrap", "envoy-xds-tls.json"), goldenJSON(t, []proto.Message{b}))
	p, err := ProxyFromNode(b.Node)
	if err != nil || p.CertDir != dir || p.Shape != ShapeEnvoy {
		t.Fatalf("proxy from the bootstrap's node: %+v, %v", p, err)
	}
	ts := b.StaticResources.Clusters[0].GetTransportSocket()
	up := &tlsv3.UpstreamTlsContext{}
	if err := ts.GetTypedConfig().UnmarshalTo(up); err != nil {
		t.Fatal(err)
	}
	if err := up.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	cvc := up.GetCommonTlsContext().GetCombinedValidationContext()
	re := regexp.MustCompile(cvc.GetDefaultValidationContext().GetMatchTypedSubjectAltNames()[0].GetMatcher().GetSafeRegex().GetRegex())
	for id, want := range map[string]bool{
		mesh.SpiffeID(testTrustDomain, "dc1", ServerIdentity): true,
		mesh.SpiffeID(testTrustDomain, "dc2", ServerIdentity): true,
		mesh.SpiffeID(testTrustDomain, "dc1", "web"):          false,
		mesh.SpiffeID("other.mesh", "dc1", ServerIdentity):    false,
		mesh.SpiffeID("testXmesh", "dc1", ServerIdentity):     false,
	} {
		if re.MatchString(id) != want {
			t.Errorf("server SAN matcher %s on %s: got %v", re, id, !want)
		}
	}
	files, err := EnvoySDSFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{
		XDSCertSDSFile:  up.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()[0].GetName(),
		XDSRootsSDSFile: cvc.GetValidationContextSdsSecretConfig().GetName(),
	}
	paths := map[string]string{
		XDSCertSDSFile:  up.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()[0].GetSdsConfig().GetPathConfigSource().GetPath(),
		XDSRootsSDSFile: cvc.GetValidationContextSdsSecretConfig().GetSdsConfig().GetPathConfigSource().GetPath(),
	}
	for name, content := range files {
		if paths[name] != filepath.Join(dir, name) {
			t.Errorf("the bootstrap reads %s from %q", name, paths[name])
		}
		if bytes.Contains(content, []byte("PRIVATE KEY")) {
			t.Errorf("%s holds a key", name)
		}
		dr := &discoveryv3.DiscoveryResponse{}
		if err := protojson.Unmarshal(content, dr); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(dr.Resources) != 1 { // Envoy's file-based SDS takes exactly one secret per file
			t.Fatalf("%s has %d resources", name, len(dr.Resources))
		}
		sec := &tlsv3.Secret{}
		if err := dr.Resources[0].UnmarshalTo(sec); err != nil {
			t.Fatal(err)
		}
		if err := sec.ValidateAll(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if sec.Name != names[name] {
			t.Errorf("%s holds secret %q, the bootstrap asks for %q", name, sec.Name, names[name])
		}
	}
	if len(files) != 2 {
		t.Fatalf("%d SDS files", len(files))
	}
	if _, err := EnvoyBootstrap(EnvoyBootstrapOptions{Service: "web", ProxyID: "web-1", XDSAddr: "10.0.0.9:8502", XDSTLS: true, TrustDomain: testTrustDomain}); err == nil {
		t.Fatal("xDS over TLS without a certificate directory accepted")
	}
}
