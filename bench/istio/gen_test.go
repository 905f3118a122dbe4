package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/compiler"
)

// The generated mesh compiles to what the comparison says it is: n transparent HTTP services
// with two endpoints each, every one reachable, the header route, and each variant's prefix
// denied to exactly one caller of each service (checked with Authorize); the Istio files hold
// the same services, route and policies.
func TestGeneratedMesh(t *testing.T) {
	const n = 20
	for variant := range 2 {
		dir := t.TempDir()
		if err := writeMeshRepo(dir, n, variant); err != nil {
			t.Fatal(err)
		}
		snap, err := compiler.CompileDir(context.Background(), dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(snap.Services) != n || snap.Mesh.Mode != mesh.ModeTransparent {
			t.Fatalf("%d services, mode %q; want %d, transparent", len(snap.Services), snap.Mesh.Mode, n)
		}
		prefix := adminPrefixes[variant]
		for i := range n {
			dst, c := serviceName(i), serviceName(caller(n, i))
			other := serviceName((caller(n, i) + 1) % n)
			if other == c {
				other = serviceName((caller(n, i) + 2) % n)
			}
			for _, tc := range []struct {
				src, method, path string
				want              mesh.Action
			}{
				{c, "GET", "/x", mesh.Allow},
				{c, "POST", "/x", mesh.Deny},
				{c, "GET", prefix + "x", mesh.Deny},
				{c, "GET", adminPrefixes[1-variant] + "x", mesh.Allow},
				{other, "POST", prefix + "x", mesh.Allow},
			} {
				v := mesh.Authorize(snap, mesh.Request{Source: tc.src, Destination: dst, Method: tc.method, Path: tc.path})
				if v.Verdict != tc.want {
					t.Errorf("variant %d: %s %s %s → %s: %s, want %s", variant, tc.src, tc.method, tc.path, dst, v.Verdict, tc.want)
				}
			}
		}
		if len(snap.Routers) != 1 {
			t.Errorf("%d routers, want the header route", len(snap.Routers))
		}

		idir := t.TempDir()
		if err := writeIstioConfig(idir, n, variant); err != nil {
			t.Fatal(err)
		}
		kinds := map[string]int{}
		for _, name := range []string{"services.yaml", "routes.yaml", "authz.yaml"} {
			b, err := os.ReadFile(filepath.Join(idir, name))
			if err != nil {
				t.Fatal(err)
			}
			for _, doc := range strings.Split(string(b), "---\n")[1:] {
				var o struct{ Kind string }
				if err := json.Unmarshal([]byte(doc), &o); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				kinds[o.Kind]++
			}
			if name == "authz.yaml" && strings.Count(string(b), `"`+prefix+`*"`) != n {
				t.Errorf("authz.yaml: want %d policies denying %s*", n, prefix)
			}
		}
		if kinds["ServiceEntry"] != n || kinds["AuthorizationPolicy"] != n || kinds["VirtualService"] != 1 {
			t.Errorf("Istio config holds %v", kinds)
		}
	}
}
