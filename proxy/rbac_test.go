package proxy

import (
	"context"
	"fmt"
	"testing"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/compiler"
	"github.com/meshgit/mesh/xds"
)

// TestRBACAgreesWithAuthorize: the network RBAC the built-in proxy evaluates, parsed from the
// extension config that the public listener the server renders names (ECDS), decides every
// caller as mesh.Authorize does; the filter's default, until the rules arrive, denies all.
func TestRBACAgreesWithAuthorize(t *testing.T) {
	const base = `package mesh

mesh: {name: "rbac", trustDomain: "shop.mesh", datacenter: "dc1", datacenters: ["dc1", "dc2"], defaultIntention: "%s"}

services: {
	api:   {protocol: "tcp", port: 8080, endpoints: [{address: "127.0.0.1", port: 21000}]}
	db:    {protocol: "tcp", port: 5432, endpoints: [{address: "127.0.0.1", port: 21001}]}
	web:   {protocol: "tcp", port: 8080}
	batch: {protocol: "tcp", port: 8080}
	admin: {protocol: "tcp", port: 8080}
}
`
	cases := map[string]string{
		"deny-default": `
intentions: api: web: action: "allow"
intentions: api: "*": action: "deny"
intentions: "*": admin: action: "allow"
intentions: db: batch: action: "allow"
`,
		"allow-default": `
intentions: api: batch: action: "deny"
intentions: "*": web: action: "deny"
intentions: db: "*": action: "allow"
intentions: db: admin: action: "deny"
`,
		"wildcards": `
intentions: "*": "*": action: "allow"
intentions: api: batch: action: "deny"
`,
	}
	for name, intentions := range cases {
		t.Run(name, func(t *testing.T) {
			def := "deny"
			if name == "allow-default" {
				def = "allow"
			}
			snap, err := compiler.Compile(context.Background(), []compiler.File{{Name: "mesh.cue", Data: []byte(fmt.Sprintf(base, def) + intentions)}})
			if err != nil {
				t.Fatal(err)
			}
			for _, dest := range []string{"api", "db"} {
				res, err := xds.Render(snap, xds.Proxy{Service: dest, Shape: xds.ShapeEnvoy})
				if err != nil {
					t.Fatal(err)
				}
				var cfg *listenerConfig
				for _, l := range res.Listeners {
					if l.GetName() == xds.PublicListener {
						if cfg, err = parseListener(l, ""); err != nil {
							t.Fatal(err)
						}
					}
				}
				if cfg == nil || cfg.chains[0].discovered == nil || !cfg.chains[0].tls {
					t.Fatalf("%s: no mTLS public listener with an RBAC filter over ECDS: %+v", dest, cfg)
				}
				// The rules come in the extension config the filter names; until they do, the
				// default denies everyone.
				d := cfg.chains[0].discovered
				var rules *rbac
				for _, x := range res.Extensions {
					if x.GetName() == d.name {
						if rules, err = compileNetworkRBACAny(x.GetTypedConfig()); err != nil {
							t.Fatal(err)
						}
					}
				}
				if rules == nil || !d.hasDefault || d.noWarming {
					t.Fatalf("%s: extension config %q: rules %v, default %v (without warming %v)", dest, d.name, rules, d.hasDefault, d.noWarming)
				}
				for _, src := range []string{"api", "db", "web", "batch", "admin"} {
					want := mesh.Authorize(snap, mesh.Request{Source: src, Destination: dest}).Verdict == mesh.Allow
					for _, dc := range []string{"dc1", "dc2"} {
						id := mesh.SpiffeID("shop.mesh", dc, src)
						if got := rules.allowed(id); got != want {
							t.Errorf("%s → %s (%s): the proxy says allowed=%v, Authorize %v", src, dest, id, got, want)
						}
						if d.def.allowed(id) {
							t.Errorf("%s → %s (%s): the default RBAC allows", src, dest, id)
						}
					}
				}
				// Another trust domain is never a source the intentions name.
				if rules.allowed(mesh.SpiffeID("evil.mesh", "dc1", "web")) && def == "deny" {
					t.Errorf("%s: a caller of another trust domain is allowed", dest)
				}
			}
		})
	}
}
