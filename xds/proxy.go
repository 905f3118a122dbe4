package xds

import (
	"fmt"
	"path"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	mesh "github.com/meshgit/mesh"
)

// Shape is the kind of xDS client a proxy is, which decides how its configuration is rendered.
type Shape string

// Shapes.
const (
	// ShapeEnvoy is an Envoy sidecar: public listener, outbound listeners, SDS for TLS.
	ShapeEnvoy Shape = "envoy"
	// ShapeGRPC is a proxyless gRPC application: API listeners, server listeners, certificate
	// provider instances for TLS.
	ShapeGRPC Shape = "grpc"
)

// ShapeMetadataKey is the node metadata field that overrides the shape guessed from the
// node's user agent: "envoy" or "grpc".
const ShapeMetadataKey = "mesh.shape"

// CertDirMetadataKey is the node metadata field in which an Envoy sidecar says where `mesh
// agent` writes its certificate files (cert.pem, key.pem, ca.pem): an absolute, clean path on
// the proxy's machine. `mesh envoy bootstrap --cert-dir` sets it.
const CertDirMetadataKey = "mesh.certDir"

// KindMetadataKey is the node metadata field that says the proxy is a gateway:
// mesh.KindMeshGateway ("mesh-gateway") or absent (a sidecar).
const KindMetadataKey = "mesh.kind"

// Proxy is what rendering needs to know about an xDS client: the service it runs as (the
// node's cluster), its shape and, for Envoy, its certificate directory. Every proxy of a
// service, shape and directory gets the same resources.
type Proxy struct {
	Service string
	Shape   Shape
	// CertDir is where the sidecar's certificate files are (Envoy only; "" for gRPC, which
	// names its files in its own bootstrap).
	CertDir string
	// Kind is "" for a sidecar or mesh.KindMeshGateway.
	Kind string
}

func (p Proxy) String() string {
	if p.Kind != "" {
		return p.Service + "/" + p.Kind
	}
	return p.Service + "/" + string(p.Shape)
}

// ProxyFromNode reads a proxy's identity from its xDS node: node.cluster is the service;
// the shape comes from node.metadata[ShapeMetadataKey] when set, otherwise from
// node.user_agent_name (gRPC libraries say "gRPC Go", "gRPC Java"...; Envoy says "envoy").
func ProxyFromNode(n *corev3.Node) (Proxy, error) {
	if n == nil || n.GetId() == "" {
		return Proxy{}, fmt.Errorf("%w: the first request must carry a node with an id", ErrBadNode)
	}
	if n.GetCluster() == "" {
		return Proxy{}, fmt.Errorf("%w: node %q has no cluster (it must name the proxy's service)", ErrBadNode, n.GetId())
	}
	p := Proxy{Service: n.GetCluster(), Shape: ShapeEnvoy}
	if strings.HasPrefix(strings.ToLower(n.GetUserAgentName()), "grpc") {
		p.Shape = ShapeGRPC
	}
	if v, ok := n.GetMetadata().GetFields()[ShapeMetadataKey]; ok {
		switch s := Shape(v.GetStringValue()); s {
		case ShapeEnvoy, ShapeGRPC:
			p.Shape = s
		default:
			return Proxy{}, fmt.Errorf("%w: node %q: metadata %s is %q, want %q or %q",
				ErrBadNode, n.GetId(), ShapeMetadataKey, v.GetStringValue(), ShapeEnvoy, ShapeGRPC)
		}
	}
	if v, ok := n.GetMetadata().GetFields()[KindMetadataKey]; ok {
		if v.GetStringValue() != mesh.KindMeshGateway {
			return Proxy{}, fmt.Errorf("%w: node %q: metadata %s is %q, want %q or none",
				ErrBadNode, n.GetId(), KindMetadataKey, v.GetStringValue(), mesh.KindMeshGateway)
		}
		p.Kind = mesh.KindMeshGateway
	}
	if v, ok := n.GetMetadata().GetFields()[CertDirMetadataKey]; ok && p.Shape == ShapeEnvoy {
		dir := v.GetStringValue()
		if !path.IsAbs(dir) || path.Clean(dir) != dir || strings.ContainsAny(dir, "\x00\n") {
			return Proxy{}, fmt.Errorf("%w: node %q: metadata %s is %q, want an absolute clean path",
				ErrBadNode, n.GetId(), CertDirMetadataKey, v.GetStringValue())
		}
		p.CertDir = dir
	}
	return p, nil
}

// upstreams returns the upstreams of a service, one per upstream service, sorted by service:
// the declared ones and, in transparent mode, every service its intentions allow
// (mesh.Snapshot.Upstreams).
func upstreams(snap *mesh.Snapshot, service string) []*mesh.Upstream {
	return snap.Upstreams(service)
}
