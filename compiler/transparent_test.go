package compiler

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	mesh "github.com/meshgit/mesh"
)

const transparentMesh = `package mesh
mesh: {name: "shop", trustDomain: "shop.mesh", mode: "transparent", transparentProxy: meshDestinationsOnly: true}
services: api: {protocol: "http", port: 8080}
services: db: {protocol: "tcp", port: 5432, mode: "direct"}
services: web: {protocol: "http", port: 8080, upstreams: api: localPort: 9191}
services: ops: {protocol: "http", port: 8080, mode: "direct", upstreams: db: localPort: 5432}
services: cli: {protocol: "grpc", port: 8080, mode: "transparent", upstreams: "*"}
intentions: api: web: action: "allow"
`

// TestTransparentMode: the mesh's mode applies to services that set none, a service's own
// mode wins, `upstreams: "*"` is transparent mode; virtual IPs are given to every service when
// some service is transparent, and the fast and full paths agree.
func TestTransparentMode(t *testing.T) {
	files := []File{{Name: "a.cue", Data: []byte(transparentMesh)}}
	snap, err := Compile(context.Background(), files)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"api": true, "db": false, "web": true, "ops": false, "cli": true} {
		if got := snap.Services[name].Transparent(); got != want {
			t.Errorf("%s: transparent = %v, want %v", name, got, want)
		}
	}
	if up := snap.Services["web"].Upstreams["api"]; up == nil || up.LocalPort != 9191 {
		t.Errorf("web's explicit upstream: %+v", up)
	}
	if !snap.Mesh.TransparentProxy.MeshDestinationsOnly {
		t.Error("meshDestinationsOnly was not compiled")
	}
	if len(snap.VirtualIPs) != len(snap.Services) {
		t.Fatalf("virtual IPs %v, want one per service", snap.VirtualIPs)
	}
	seen := map[string]bool{}
	for name, ip := range snap.VirtualIPs {
		a, err := netip.ParseAddr(ip)
		if err != nil || !mesh.VirtualIPPrefix.Contains(a) || seen[ip] {
			t.Errorf("%s: virtual IP %q is not a distinct address of %s", name, ip, mesh.VirtualIPPrefix)
		}
		seen[ip] = true
	}
	fast := compileJSON(t, files)
	fastPath = false
	defer func() { fastPath = true }()
	if full := compileJSON(t, files); full != fast {
		t.Errorf("the full path's snapshot differs:\nfast: %s\nfull: %s", fast, full)
	}
}

// TestVirtualIPsStable: a service keeps its virtual IP when services are added and removed.
func TestVirtualIPsStable(t *testing.T) {
	compile := func(extra string) *mesh.Snapshot {
		snap, err := Compile(context.Background(), []File{{Name: "a.cue", Data: []byte(transparentMesh + extra)}})
		if err != nil {
			t.Fatal(err)
		}
		return snap
	}
	before := compile("")
	after := compile("services: zeta: {port: 1}\nservices: aaa: {port: 1}\n")
	for name, ip := range before.VirtualIPs {
		if after.VirtualIPs[name] != ip {
			t.Errorf("%s: virtual IP moved from %s to %s when services were added", name, ip, after.VirtualIPs[name])
		}
	}
	// Without transparent services there are none, and versions stay as they were.
	direct, err := Compile(context.Background(), []File{{Name: "a.cue", Data: []byte(`package mesh
mesh: {name: "shop", trustDomain: "shop.mesh", mode: "direct"}
services: api: {protocol: "http", port: 8080}
`)}})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := Compile(context.Background(), []File{{Name: "a.cue", Data: []byte(`package mesh
mesh: {name: "shop", trustDomain: "shop.mesh"}
services: api: {protocol: "http", port: 8080}
`)}})
	if err != nil {
		t.Fatal(err)
	}
	if direct.VirtualIPs != nil || direct.Version != plain.Version {
		t.Errorf("mode \"direct\" changed the snapshot: virtual IPs %v, version %s vs %s", direct.VirtualIPs, direct.Version, plain.Version)
	}
}

// TestPositionsWideStruct: the positions of the fields of a struct too wide to scan (a service
// with hundreds of upstreams, indexed by name) are where they are written, the first place
// when a field is written twice, on the fast and the full path.
func TestPositionsWideStruct(t *testing.T) {
	const n = 300
	var b strings.Builder
	b.WriteString("package mesh\nmesh: {name: \"m\", trustDomain: \"m.mesh\"}\nservices: web: {port: 80, upstreams: {\n")
	for i := range n {
		fmt.Fprintf(&b, "\tu%d: localPort: %d\n", i, 1000+i) // line 4+i
	}
	b.WriteString("\tu7: localPort: 1007\n}}\n") // u7 again, after the others
	for i := range n {
		fmt.Fprintf(&b, "services: u%d: port: 80\n", i)
	}
	files := []File{{Name: "a.cue", Data: []byte(b.String())}}
	for _, fast := range []bool{true, false} {
		fastPath = fast
		snap, err := Compile(context.Background(), files)
		fastPath = true
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			p := snap.Pos(mesh.PathService("web") + ".upstreams." + fmt.Sprintf("u%d", i))
			if p.File != "a.cue" || p.Line != 4+i || p.Col != 2 {
				t.Fatalf("fast path %v: upstream u%d at %v, want a.cue:%d:2", fast, i, p, 4+i)
			}
		}
	}
}
