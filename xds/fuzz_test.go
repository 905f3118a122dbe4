package xds

import (
	"context"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"

	mesh "github.com/meshgit/mesh"
)

// FuzzStreamRequests drives the server's stream callbacks (what every xDS request goes through
// before the cache) with arbitrary node, type, nonce, version and NACK fields, in any order
// relative to responses and stream closes. It must never panic, and a request rejected for one
// stream must leave the others' state alone.
func FuzzStreamRequests(f *testing.F) {
	f.Add("web-1", "web", "envoy", "type.googleapis.com/envoy.config.cluster.v3.Cluster", "1", "v", true, uint8(3))
	f.Add("", "", "", "", "", "", false, uint8(0))
	f.Add("x", "nope", "gRPC Go", "bogus", "9", "", true, uint8(255))
	snap := seal(f, richMesh())
	f.Fuzz(func(t *testing.T, id, cluster, agent, typeURL, nonce, version string, nack bool, ops uint8) {
		s := NewServer(nil)
		defer s.Close()
		cb := (*callbacks)(s)
		if ops&1 == 1 {
			if err := s.SetSnapshot(snap); err != nil {
				t.Fatal(err)
			}
		}
		ctx := context.Background()
		_ = cb.OnStreamOpen(ctx, 1, "")
		_ = cb.OnDeltaStreamOpen(ctx, 2, typeURL)
		node := &corev3.Node{Id: id, Cluster: cluster, UserAgentName: agent}
		req := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typeURL, ResponseNonce: nonce, VersionInfo: version, ResourceNames: []string{id, cluster}}
		if nack {
			req.ErrorDetail = &rpcstatus.Status{Message: version}
		}
		_ = cb.OnStreamRequest(1, req)
		cb.OnStreamResponse(ctx, 1, req, &discoveryv3.DiscoveryResponse{TypeUrl: typeURL, Nonce: nonce, VersionInfo: version})
		_ = cb.OnStreamRequest(1, req)
		_ = cb.OnStreamDeltaRequest(2, &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: typeURL, ResponseNonce: nonce, ErrorDetail: req.ErrorDetail})
		cb.OnStreamDeltaResponse(2, nil, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: typeURL, Nonce: nonce, SystemVersionInfo: version})
		_ = cb.OnStreamRequest(3, &discoveryv3.DiscoveryRequest{TypeUrl: typeURL}) // never opened
		_ = cb.OnFetchRequest(ctx, req)
		if ops&2 == 2 {
			_ = s.SetSnapshot(snap)
		}
		if ops&4 == 4 {
			cb.OnStreamClosed(1, node)
		}
		cb.OnDeltaStreamClosed(2, node)
		cb.OnStreamClosed(7, nil)
		_ = s.Proxies()
	})
}

// FuzzRenderMatches renders meshes whose permissions and routes carry arbitrary match strings.
// Rendering must never panic; what it renders is either valid or reported by Validate (then
// SetSnapshot refuses the whole snapshot).
func FuzzRenderMatches(f *testing.F) {
	f.Add("/a", "/b/", "x-h", "exact", "v", "GET", true, "q")
	f.Add("", "", "", "", "", "", false, "")
	f.Add("(", "\x00", ":path", "regex", "[", " ", true, "&=")
	f.Fuzz(func(t *testing.T, path, prefix, header, kind, value, method string, invert bool, query string) {
		s := richMesh()
		m := &mesh.HTTPMatch{Path: path, PathPrefix: prefix,
			Header:     []mesh.HeaderMatch{{Name: header, Kind: kind, Value: value, Invert: invert}},
			QueryParam: []mesh.QueryMatch{{Name: query, Kind: kind, Value: value}}}
		if method != "" {
			m.Methods = []string{method}
		}
		addIntention(s, &mesh.Intention{Source: "db", Destination: "api", Permissions: []mesh.Permission{{Action: mesh.Allow, HTTP: m}}})
		s.Chains["api"].Routes[0].Match = m
		// No JSON round trip (seal): it would replace invalid UTF-8, which fuzzing produces.
		_ = s.Seal()
		snap := s
		for _, svc := range []string{"api", "web"} {
			for _, shape := range []Shape{ShapeEnvoy, ShapeGRPC} {
				res, err := Render(snap, Proxy{Service: svc, Shape: shape})
				if err != nil {
					continue // e.g. invalid UTF-8 cannot be marshalled: an error, not a panic
				}
				_ = res.Validate()
				if err := res.Consistent(); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}
