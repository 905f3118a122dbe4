package xds

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/compiler"
)

// update reports whether golden files are to be rewritten (MESH_UPDATE=1).
func update() bool { return os.Getenv("MESH_UPDATE") != "" }

// goldenJSON renders resources as indented JSON with sorted keys. protojson's output is
// deliberately unstable, so it is re-encoded through a generic value and compared as JSON.
func goldenJSON(t *testing.T, list []proto.Message) []byte {
	t.Helper()
	vals := make([]any, 0, len(list))
	for _, m := range list {
		b, err := protojson.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		vals = append(vals, v)
	}
	out, err := json.MarshalIndent(vals, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(out, '\n')
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if update() {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with MESH_UPDATE=1 to create it)", err)
	}
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s differs from the rendering (MESH_UPDATE=1 refreshes it); got:\n%s", path, got)
	}
}

func messages[T proto.Message](l []T) []proto.Message {
	out := make([]proto.Message, len(l))
	for i, m := range l {
		out[i] = m
	}
	return out
}

// goldenBundle is the trust bundle of the golden files: a public certificate only.
func goldenBundle(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseBundle(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// renderAndCheck renders every service of snap in both shapes (Envoy with a certificate
// directory and the golden trust bundle), validates, checks consistency and compares with
// golden files under testdata/golden/<name>.
func renderAndCheck(t *testing.T, name string, snap *mesh.Snapshot) {
	bundle := goldenBundle(t)
	for _, svc := range snap.ServiceNames() {
		for _, shape := range []Shape{ShapeEnvoy, ShapeGRPC} {
			p := Proxy{Service: svc, Shape: shape}
			if shape == ShapeEnvoy {
				p.CertDir = "/var/run/mesh/" + svc
			}
			t.Run(svc+"/"+string(shape), func(t *testing.T) {
				res, err := RenderWithBundle(snap, p, bundle)
				if err != nil {
					t.Fatal(err)
				}
				if err := res.Validate(); err != nil {
					t.Errorf("ValidateAll: %v", err)
				}
				if err := res.Consistent(); err != nil {
					t.Errorf("consistency: %v", err)
				}
				if shape == ShapeEnvoy {
					cs, err := cachev3.NewSnapshot("1", res.byType())
					if err != nil {
						t.Fatal(err)
					}
					if err := cs.Consistent(); err != nil {
						t.Errorf("go-control-plane Consistent: %v", err)
					}
				}
				again, _ := RenderWithBundle(snap, p, bundle)
				for _, typ := range resourceTypes {
					if !equalResources(res.byType()[typ], again.byType()[typ]) {
						t.Errorf("%s: rendering is not deterministic", shortType(typ))
					}
				}
				dir := filepath.Join("testdata", "golden", name)
				base := svc + "." + string(shape) + "."
				checkGolden(t, filepath.Join(dir, base+"listeners.json"), goldenJSON(t, messages(res.Listeners)))
				checkGolden(t, filepath.Join(dir, base+"routes.json"), goldenJSON(t, messages(res.Routes)))
				checkGolden(t, filepath.Join(dir, base+"clusters.json"), goldenJSON(t, messages(res.Clusters)))
				checkGolden(t, filepath.Join(dir, base+"endpoints.json"), goldenJSON(t, messages(res.Endpoints)))
				checkGolden(t, filepath.Join(dir, base+"secrets.json"), goldenJSON(t, messages(res.Secrets)))
				if shape == ShapeEnvoy {
					checkGolden(t, filepath.Join(dir, base+"extensions.json"), goldenJSON(t, messages(res.Extensions)))
				} else if len(res.Extensions) != 0 {
					t.Errorf("gRPC got %d extension configs; proxyless gRPC does not do ECDS", len(res.Extensions))
				}
				if shape == ShapeEnvoy && len(res.Secrets) != 2 {
					t.Errorf("envoy got %d secrets, want %s and %s", len(res.Secrets), SecretLeaf, SecretRoots)
				}
			})
		}
	}
}

func equalResources[T any](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(any(a[i]).(proto.Message), any(b[i]).(proto.Message)) {
			return false
		}
	}
	return true
}

func TestRenderGolden(t *testing.T) {
	t.Run("rich", func(t *testing.T) { renderAndCheck(t, "rich", seal(t, richMesh())) })
	t.Run("greeter", func(t *testing.T) { renderAndCheck(t, "greeter", seal(t, greeterMesh(50051, 50052))) })
	allowDefault := richMesh()
	allowDefault.Mesh.DefaultIntention = mesh.Allow
	t.Run("rich-default-allow", func(t *testing.T) { renderAndCheck(t, "rich-default-allow", seal(t, allowDefault)) })
	t.Run("transparent", func(t *testing.T) { renderAndCheck(t, "transparent", seal(t, transparentMesh())) })
}

// TestRenderRepoExample covers every service of repo-example in both shapes.
func TestRenderRepoExample(t *testing.T) {
	snap, err := compiler.CompileDir(context.Background(), filepath.Join("..", "repo-example"))
	if err != nil {
		t.Fatalf("compile repo-example: %v", err)
	}
	if len(snap.Services) == 0 {
		t.Fatal("repo-example has no services")
	}
	renderAndCheck(t, "repo-example", snap)
}

func TestRenderUnknownService(t *testing.T) {
	snap := seal(t, richMesh())
	_, err := Render(snap, Proxy{Service: "nope", Shape: ShapeEnvoy})
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("got %v, want an unknown service error", err)
	}
}

func walkJSON(v any, key string, f func(key string, val any)) {
	f(key, v)
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			walkJSON(e, k, f)
		}
	case []any:
		for _, e := range x {
			walkJSON(e, key, f)
		}
	}
}

func TestNoPrivateKeyInGolden(t *testing.T) {
	err := filepath.Walk(filepath.Join("testdata", "golden"), func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte("PRIVATE KEY")) {
			t.Errorf("%s contains a private key", path)
		}
		// Secrets carry PEM as base64 (inlineBytes): look inside, and a private key may only be
		// a file reference.
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		walkJSON(v, "", func(key string, val any) {
			if s, ok := val.(string); ok && key == "inlineBytes" {
				if d, err := base64.StdEncoding.DecodeString(s); err == nil && bytes.Contains(d, []byte("PRIVATE KEY")) {
					t.Errorf("%s: inline bytes hold a private key", path)
				}
			}
			if m, ok := val.(map[string]any); ok && key == "privateKey" {
				if _, ok := m["filename"]; !ok || len(m) != 1 {
					t.Errorf("%s: a private key that is not a file reference: %v", path, m)
				}
			}
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
