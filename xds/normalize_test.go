package xds

import (
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// TestEnvoyNormalizesPaths: every HTTP connection manager of an Envoy sidecar normalizes the
// path and merges slashes, as mesh.NormalizePath does for Authorize, so that "/v1/../admin"
// is judged (and routed) as "/admin".
func TestEnvoyNormalizesPaths(t *testing.T) {
	snap := seal(t, richMesh())
	hcms := 0
	for _, svc := range snap.ServiceNames() {
		res, err := Render(snap, Proxy{Service: svc, Shape: ShapeEnvoy})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range res.Listeners {
			for _, fc := range l.FilterChains {
				for _, f := range fc.Filters {
					if f.Name != hcmFilterName {
						continue
					}
					h := &hcmv3.HttpConnectionManager{}
					if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
						t.Fatal(err)
					}
					hcms++
					if !h.GetNormalizePath().GetValue() || !h.GetMergeSlashes() {
						t.Errorf("%s listener %s: normalize_path %v, merge_slashes %v; want both", svc, l.Name, h.GetNormalizePath(), h.GetMergeSlashes())
					}
				}
			}
		}
	}
	if hcms == 0 {
		t.Fatal("the rich mesh rendered no HTTP connection manager")
	}
}
