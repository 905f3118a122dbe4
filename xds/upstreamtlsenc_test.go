package xds

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	mesh "github.com/meshgit/mesh"
)

// TestUpstreamTLSEncoding holds the TLS transport socket of every Envoy target cluster
// (written from the memo's shared parts: upstreamtlsenc.go) to a fresh deterministic marshal
// of the context the cluster's target asks for, over random meshes, transparent ones and
// meshgen's, with and without a memo; and the rendered cluster carries exactly that socket
// (and, for each failover target reached through mesh gateways, a match with that target's).
func TestUpstreamTLSEncoding(t *testing.T) {
	det := proto.MarshalOptions{Deterministic: true}
	checked, failovers := 0, 0
	for i, snap := range encoderSnaps(t, 11) {
		m := newMemo(snap, nil)
		for _, name := range snap.ServiceNames() {
			p := Proxy{Service: name, Shape: ShapeEnvoy}
			cs, err := clusters(snap, p, m)
			if err != nil {
				t.Fatal(err)
			}
			byName := map[string]*clusterv3.Cluster{}
			for _, c := range cs {
				byName[c.Name] = c
			}
			for _, pt := range proxyTargets(snap, name) {
				want, err := det.Marshal(envoyUpstreamTLS(snap, pt.target.SNI, targetSANs(snap, pt)))
				if err != nil {
					t.Fatal(err)
				}
				for _, mm := range []*memo{m, nil} {
					ts, err := envoyUpstreamTLSSocket(snap, pt.target.SNI, targetSANs(snap, pt), mm)
					if err != nil {
						t.Fatal(err)
					}
					if got := ts.GetTypedConfig().GetValue(); !bytes.Equal(got, want) {
						t.Fatalf("mesh %d, %s: target %s: written context differs from a fresh marshal:\n got %x\nwant %x", i, name, pt.target.SNI, got, want)
					}
				}
				c := byName[pt.target.SNI]
				if c == nil {
					t.Fatalf("mesh %d, %s: no cluster %s", i, name, pt.target.SNI)
				}
				old, err := tlsTransportSocket(envoyUpstreamTLS(snap, pt.target.SNI, targetSANs(snap, pt)))
				if err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(c.TransportSocket, old) {
					t.Fatalf("mesh %d, %s: cluster %s: transport socket differs from tlsTransportSocket's", i, name, c.Name)
				}
				fts := gatewayFailovers(snap, pt)
				if len(fts) != len(c.TransportSocketMatches) {
					t.Fatalf("mesh %d, %s: cluster %s: %d transport socket matches for %d failovers", i, name, c.Name, len(c.TransportSocketMatches), len(fts))
				}
				for k, ft := range fts {
					want, err := det.Marshal(envoyUpstreamTLS(snap, ft.SNI, targetSANs(snap, pt)))
					if err != nil {
						t.Fatal(err)
					}
					if got := c.TransportSocketMatches[k].GetTransportSocket().GetTypedConfig().GetValue(); !bytes.Equal(got, want) {
						t.Fatalf("mesh %d, %s: cluster %s: failover %s: written context differs from a fresh marshal", i, name, c.Name, ft.SNI)
					}
					failovers++
				}
				checked++
			}
		}
	}
	if checked < 200 {
		t.Fatalf("checked %d target clusters, want at least 200", checked)
	}
	if failovers == 0 {
		t.Fatal("no failover target's transport socket checked")
	}
}

// TestUpstreamTLSEncodingEdges holds appendUpstreamTLS to protobuf-go where the encoding has
// edges (no SNI, no SANs, empty and long strings, every TLS setting) and the socket's
// validation to ValidateAll of the whole context (an SNI over 255 bytes).
func TestUpstreamTLSEncodingEdges(t *testing.T) {
	det := proto.MarshalOptions{Deterministic: true}
	tlss := []mesh.TLS{{}, {MinVersion: "TLSv1_3"}, {MinVersion: "TLSv1_2", MaxVersion: "TLSv1_3", CipherSuites: []string{"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"}}}
	long := strings.Repeat("s", 300)
	sniCases := []string{"", "a", "api.default.dc1.internal.example.consul", strings.Repeat("x", 255), strings.Repeat("x", 256)}
	sanCases := [][]string{nil, {""}, {"spiffe://td/ns/default/dc/dc1/svc/a"}, {"a", long, ""}}
	for _, tl := range tlss {
		snap := &mesh.Snapshot{Mesh: mesh.Config{TLS: tl}}
		for _, sni := range sniCases {
			for _, sans := range sanCases {
				ctx := envoyUpstreamTLS(snap, sni, sans)
				want, err := det.Marshal(ctx)
				if err != nil {
					t.Fatal(err)
				}
				parts, err := newUpstreamTLSParts(snap)
				if err != nil {
					t.Fatal(err)
				}
				if got := appendUpstreamTLS(nil, parts, sni, sans); !bytes.Equal(got, want) {
					t.Fatalf("tls %+v, sni %d bytes, sans %q: got %x\nwant %x", tl, len(sni), sans, got, want)
				}
				if got := appendUpstreamTLS([]byte{7}, parts, sni, sans); !bytes.Equal(got, append([]byte{7}, want...)) {
					t.Fatal("appendUpstreamTLS does not append")
				}
				_, errOld := tlsTransportSocket(ctx)
				ts, errNew := envoyUpstreamTLSSocket(snap, sni, sans, newMemo(seal(t, richMesh()), nil))
				if (errOld == nil) != (errNew == nil) || (errNew != nil && !errors.Is(errNew, ErrInvalidResource)) {
					t.Fatalf("sni %d bytes, sans %q: validation %v, ValidateAll of the whole context %v", len(sni), sans, errNew, errOld)
				}
				if (len(sni) > 255) != (errNew != nil) {
					t.Fatalf("sni %d bytes: validation %v", len(sni), errNew)
				}
				if errNew == nil && ts.GetTypedConfig().GetTypeUrl() != "type.googleapis.com/"+string(ctx.ProtoReflect().Descriptor().FullName()) {
					t.Fatalf("type URL %q", ts.GetTypedConfig().GetTypeUrl())
				}
			}
		}
	}
}

// TestUpstreamTLSFieldNumbers holds the field numbers appendUpstreamTLS writes to the
// descriptors of the messages.
func TestUpstreamTLSFieldNumbers(t *testing.T) {
	for _, c := range []struct {
		m     proto.Message
		field string
		want  int
	}{
		{&tlsv3.UpstreamTlsContext{}, "common_tls_context", upTLSCommonField},
		{&tlsv3.UpstreamTlsContext{}, "sni", upTLSSNIField},
		{&tlsv3.CommonTlsContext{}, "combined_validation_context", commonCombinedField},
		{&tlsv3.CommonTlsContext_CombinedCertificateValidationContext{}, "default_validation_context", combinedDefaultField},
		{&tlsv3.CertificateValidationContext{}, "match_typed_subject_alt_names", validationSANsField},
		{&tlsv3.SubjectAltNameMatcher{}, "san_type", sanMatcherTypeField},
		{&tlsv3.SubjectAltNameMatcher{}, "matcher", sanMatcherMatchField},
		{&matcherv3.StringMatcher{}, "exact", stringMatcherExactFld},
	} {
		f := c.m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(c.field))
		if f == nil || int(f.Number()) != c.want {
			t.Fatalf("%s.%s: descriptor says %v, the encoder writes %d", c.m.ProtoReflect().Descriptor().FullName(), c.field, f, c.want)
		}
	}
	if upstreamTLSTypeURL != "type.googleapis.com/"+string((&tlsv3.UpstreamTlsContext{}).ProtoReflect().Descriptor().FullName()) {
		t.Fatalf("type URL %q", upstreamTLSTypeURL)
	}
}
