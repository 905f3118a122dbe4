package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The equivalent mesh, written for both servers. Services svc-0000 … are HTTP services on port
// 8080, each with two instances (10.a.b.1 and 10.a.b.2, port 21000 behind mesh's sidecar);
// proxy i is svc-i's first instance. Every service may call every service: mesh's transparent
// mode with a "*" → "*" allow, Istio's default visibility with no Sidecar resource. One header
// route: svc-0000 sends requests with "x-canary: 1" to svc-0001. The authorization: svc-i, for
// calls from svc-(n-1-i), denies a path prefix and every method but GET and HEAD; the change
// switches that prefix (adminPrefixes) in every service at once, which changes the inbound
// authorization of every proxy and nothing else.

const (
	namespace   = "bench"
	trustDomain = "cluster.local"
	appPort     = 8080
	sidecarPort = 21000
)

// adminPrefixes are the denied prefix of variant 0 and variant 1; each is the marker a proxy's
// listeners carry once that variant reached it.
var adminPrefixes = [2]string{"/admin/", "/internal/"}

func serviceName(i int) string { return fmt.Sprintf("svc-%04d", i) }

// instanceIP is the address of instance k (1 or 2) of service i.
func instanceIP(i, k int) string { return fmt.Sprintf("10.%d.%d.%d", i/250, i%250, k) }

// host is service i's name in Istio.
func host(i int) string { return fmt.Sprintf("%s.%s.svc.cluster.local", serviceName(i), namespace) }

// caller is the one service whose calls into service i the authorization restricts.
func caller(n, i int) int { return n - 1 - i }

// writeFile writes name under dir, creating directories.
func writeFile(dir, name, text string) error {
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(text), 0o644)
}

// writeMeshRepo writes the mesh repository's files for n services into dir (not committed).
func writeMeshRepo(dir string, n, variant int) error {
	mesh := `package mesh

mesh: {
	name:             "bench"
	trustDomain:      "bench.mesh"
	mode:             "transparent"
	defaultIntention: "deny"
}

intentions: "*": "*": action: "allow"

routers: "svc-0000": routes: [{
	match: http: header: [{name: "x-canary", exact: "1"}]
	destination: service: "svc-0001"
}]
`
	if err := writeFile(dir, "mesh.cue", mesh); err != nil {
		return err
	}
	for i := range n {
		text := fmt.Sprintf(`package mesh

services: %q: {
	protocol: "http"
	port:     %d
	endpoints: [{address: %q, port: %d}, {address: %q, port: %d}]
}
`, serviceName(i), appPort, instanceIP(i, 1), sidecarPort, instanceIP(i, 2), sidecarPort)
		if err := writeFile(dir, filepath.Join("services", serviceName(i)+".cue"), text); err != nil {
			return err
		}
	}
	return writeFile(dir, "intentions.cue", meshIntentions(n, variant))
}

// meshIntentions is the file the authorization change edits.
func meshIntentions(n, variant int) string {
	var b strings.Builder
	b.WriteString("package mesh\n\nintentions: {\n")
	for i := range n {
		fmt.Fprintf(&b, "\t%q: %q: permissions: [\n", serviceName(i), serviceName(caller(n, i)))
		fmt.Fprintf(&b, "\t\t{action: \"deny\", http: pathPrefix: %q},\n", adminPrefixes[variant])
		b.WriteString("\t\t{action: \"allow\", http: methods: [\"GET\", \"HEAD\"]},\n\t]\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// Istio resources, written as JSON documents (YAML's subset) separated by "---".
type object map[string]any

func resource(apiVersion, kind, name string, spec object) object {
	return object{"apiVersion": apiVersion, "kind": kind, "metadata": object{"name": name, "namespace": namespace}, "spec": spec}
}

func yamlDocs(objs []object) (string, error) {
	var b strings.Builder
	for _, o := range objs {
		j, err := json.Marshal(o)
		if err != nil {
			return "", err
		}
		b.WriteString("---\n")
		b.Write(j)
		b.WriteString("\n")
	}
	return b.String(), nil
}

// writeIstioConfig writes the Istio configuration directory for n services: services.yaml
// (a ServiceEntry per service, as Kubernetes services with their endpoints), routes.yaml (the
// VirtualService of the header route) and authz.yaml (an AuthorizationPolicy per service).
func writeIstioConfig(dir string, n, variant int) error {
	var entries []object
	for i := range n {
		var eps []any
		for k := 1; k <= 2; k++ {
			eps = append(eps, object{"address": instanceIP(i, k), "labels": object{"app": serviceName(i)},
				"serviceAccount": serviceName(i), "ports": object{"http": appPort}})
		}
		entries = append(entries, resource("networking.istio.io/v1", "ServiceEntry", serviceName(i), object{
			"hosts":      []string{host(i)},
			"location":   "MESH_INTERNAL",
			"resolution": "STATIC",
			"ports":      []any{object{"number": appPort, "name": "http", "protocol": "HTTP", "targetPort": appPort}},
			"endpoints":  eps,
		}))
	}
	route := resource("networking.istio.io/v1", "VirtualService", serviceName(0), object{
		"hosts": []string{host(0)},
		"http": []any{
			object{"match": []any{object{"headers": object{"x-canary": object{"exact": "1"}}}},
				"route": []any{object{"destination": object{"host": host(1)}}}},
			object{"route": []any{object{"destination": object{"host": host(0)}}}},
		},
	})
	for name, objs := range map[string][]object{"services.yaml": entries, "routes.yaml": {route}} {
		text, err := yamlDocs(objs)
		if err != nil {
			return err
		}
		if err := writeFile(dir, name, text); err != nil {
			return err
		}
	}
	text, err := istioAuthz(n, variant)
	if err != nil {
		return err
	}
	return writeFile(dir, "authz.yaml", text)
}

// istioAuthz is the file the authorization change replaces: per service a DENY policy for its
// caller's requests under the prefix or with another method than GET and HEAD.
func istioAuthz(n, variant int) (string, error) {
	var objs []object
	for i := range n {
		from := []any{object{"source": object{"principals": []string{
			fmt.Sprintf("%s/ns/%s/sa/%s", trustDomain, namespace, serviceName(caller(n, i)))}}}}
		objs = append(objs, resource("security.istio.io/v1", "AuthorizationPolicy", serviceName(i), object{
			"selector": object{"matchLabels": object{"app": serviceName(i)}},
			"action":   "DENY",
			"rules": []any{
				object{"from": from, "to": []any{object{"operation": object{"paths": []string{adminPrefixes[variant] + "*"}}}}},
				object{"from": from, "to": []any{object{"operation": object{"notMethods": []string{"GET", "HEAD"}}}}},
			},
		}))
	}
	return yamlDocs(objs)
}

// istioMeshConfig is istiod's mesh configuration: its configuration from configDir, nothing
// else changed from the defaults.
func istioMeshConfig(configDir string) string {
	return fmt.Sprintf("rootNamespace: istio-system\ntrustDomain: %s\nconfigSources:\n- address: fs://%s\n", trustDomain, configDir)
}
