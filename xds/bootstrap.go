package xds

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// xdsClusterName is the bootstrap cluster through which Envoy reaches the mesh servers.
const xdsClusterName = "mesh_xds"

// EnvoyBootstrapOptions says how an Envoy sidecar reaches the xDS server and who it is.
type EnvoyBootstrapOptions struct {
	Service   string // node.cluster
	ProxyID   string // node.id
	XDSAddr   string // host:port of the mesh xDS server
	AdminAddr string // host:port of Envoy's admin interface; default 127.0.0.1:19000
	// CertDir is the directory in which `mesh agent --service S --dir DIR` beside Envoy keeps
	// cert.pem, key.pem and ca.pem. It goes into the node metadata (CertDirMetadataKey), made
	// absolute, and the server's SDS secret SecretLeaf names the files in it: the key never
	// leaves the workload. Without it Envoy's mTLS listeners and clusters never become ready.
	CertDir string
	// XDSTLS connects to the xDS server with mTLS (mesh serve --xds-tls): Envoy presents the
	// agent's certificate and accepts only a server whose SPIFFE ID is service ServerIdentity of
	// TrustDomain. Both come from file-based SDS (EnvoySDSFiles, which the agent writes into
	// CertDir), so renewals and CA rotations apply without restarting Envoy. Needs CertDir and
	// TrustDomain.
	XDSTLS      bool
	TrustDomain string
}

// Files of file-based SDS for Envoy's own xDS connection, in the certificate directory.
const (
	XDSCertSDSFile  = "envoy-xds-cert.json"
	XDSRootsSDSFile = "envoy-xds-ca.json"

	xdsCertSecret  = "mesh_xds_cert"
	xdsRootsSecret = "mesh_xds_ca"
)

// EnvoySDSFiles returns the file-based SDS files (name → content) that an Envoy bootstrap made
// with XDSTLS reads from certDir: DiscoveryResponses with one secret each, which name the
// agent's cert.pem and key.pem (the certificate Envoy presents to the xDS server) and ca.pem
// (the roots it checks the server with), and watch the directory. They hold no key material,
// only file names, and do not change with renewals: `mesh agent` writes them once beside its
// certificate files (ca.Agent.ExtraFiles).
func EnvoySDSFiles(certDir string) (map[string][]byte, error) {
	dir, err := filepath.Abs(certDir)
	if err != nil {
		return nil, err
	}
	watch := &corev3.WatchedDirectory{Path: dir}
	out := map[string][]byte{}
	for name, sec := range map[string]*tlsv3.Secret{
		XDSCertSDSFile: {Name: xdsCertSecret, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: fileSource(filepath.Join(dir, CertFile)),
			PrivateKey:       fileSource(filepath.Join(dir, KeyFile)),
			WatchedDirectory: watch,
		}}},
		XDSRootsSDSFile: {Name: xdsRootsSecret, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa:        fileSource(filepath.Join(dir, CAFile)),
			WatchedDirectory: watch,
		}}},
	} {
		if err := sec.ValidateAll(); err != nil {
			return nil, err
		}
		a, err := anypb.New(sec)
		if err != nil {
			return nil, err
		}
		b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(&discoveryv3.DiscoveryResponse{Resources: []*anypb.Any{a}})
		if err != nil {
			return nil, err
		}
		out[name] = b
	}
	return out, nil
}

// xdsClientTLS is the transport socket of the bootstrap's xDS cluster with XDSTLS.
func xdsClientTLS(dir, trustDomain string) (*corev3.TransportSocket, error) {
	fileSDS := func(file string) *corev3.ConfigSource {
		return &corev3.ConfigSource{
			ResourceApiVersion: corev3.ApiVersion_V3,
			ConfigSourceSpecifier: &corev3.ConfigSource_PathConfigSource{PathConfigSource: &corev3.PathConfigSource{
				Path: filepath.Join(dir, file), WatchedDirectory: &corev3.WatchedDirectory{Path: dir},
			}},
		}
	}
	// The server's leaf names its datacenter, which the bootstrap does not know.
	server := "^" + regexp.QuoteMeta("spiffe://"+trustDomain+"/ns/default/dc/") + "[^/]+" + regexp.QuoteMeta("/svc/"+ServerIdentity) + "$"
	return tlsTransportSocket(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
		AlpnProtocols:                  []string{"h2"}, // gRPC servers require ALPN
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: xdsCertSecret, SdsConfig: fileSDS(XDSCertSDSFile)}},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext: &tlsv3.CertificateValidationContext{
					MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
						SanType: tlsv3.SubjectAltNameMatcher_URI,
						Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: server}}},
					}},
				},
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: xdsRootsSecret, SdsConfig: fileSDS(XDSRootsSDSFile)},
			},
		},
	}})
}

// EnvoyBootstrap returns an Envoy bootstrap whose dynamic resources all come over ADS (delta
// gRPC, xDS v3) from the mesh server, with the node id and cluster set and the admin interface
// on loopback. It passes ValidateAll. Delta (incremental) xDS, as Consul's sidecars use: a
// change sends only the resources that changed, where state of the world would send every
// listener again when one changes, a transparent sidecar's outbound listener with a filter
// chain per reachable service among them. (An RBAC change changes no listener either way: the
// rules are an extension config of their own, extensions.go.)
func EnvoyBootstrap(o EnvoyBootstrapOptions) (*bootstrapv3.Bootstrap, error) {
	if o.Service == "" || o.ProxyID == "" {
		return nil, fmt.Errorf("envoy bootstrap: service and proxy id are required")
	}
	host, port, err := splitHostPort(o.XDSAddr)
	if err != nil {
		return nil, fmt.Errorf("envoy bootstrap: xds address: %w", err)
	}
	admin := o.AdminAddr
	if admin == "" {
		admin = "127.0.0.1:19000"
	}
	ahost, aport, err := splitHostPort(admin)
	if err != nil {
		return nil, fmt.Errorf("envoy bootstrap: admin address: %w", err)
	}
	ads := &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
	xdsCluster := &clusterv3.Cluster{
		Name:                 xdsClusterName,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
		ConnectTimeout:       durationpb.New(defaultConnectTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: xdsClusterName,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(host, port)},
			}},
		},
	}
	if err := setHTTP2(xdsCluster); err != nil {
		return nil, err
	}
	node := &corev3.Node{Id: o.ProxyID, Cluster: o.Service}
	var dir string
	if o.CertDir != "" {
		if dir, err = filepath.Abs(o.CertDir); err != nil {
			return nil, fmt.Errorf("envoy bootstrap: certificate directory: %w", err)
		}
		node.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{CertDirMetadataKey: structpb.NewStringValue(dir)}}
	}
	if o.XDSTLS {
		if dir == "" || o.TrustDomain == "" {
			return nil, fmt.Errorf("envoy bootstrap: xDS over TLS needs the certificate directory and the trust domain")
		}
		if xdsCluster.TransportSocket, err = xdsClientTLS(dir, o.TrustDomain); err != nil {
			return nil, fmt.Errorf("envoy bootstrap: %w", err)
		}
	}
	b := &bootstrapv3.Bootstrap{
		Node: node,
		Admin: &bootstrapv3.Admin{
			Address: socketAddress(ahost, aport),
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Clusters: []*clusterv3.Cluster{xdsCluster},
		},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:             corev3.ApiConfigSource_DELTA_GRPC,
				TransportApiVersion: corev3.ApiVersion_V3,
				GrpcServices: []*corev3.GrpcService{{
					TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: xdsClusterName}},
				}},
			},
			LdsConfig: ads,
			CdsConfig: ads,
		},
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("envoy bootstrap: %w", err)
	}
	return b, nil
}

// GRPCBootstrapOptions says how a proxyless gRPC service reaches the xDS server, who it is and
// where its certificates are.
type GRPCBootstrapOptions struct {
	Service string // node.cluster
	NodeID  string // node.id; default "<service>-grpc"
	XDSAddr string // host:port of the mesh xDS server
	// CertDir holds cert.pem, key.pem and ca.pem, watched by the file_watcher provider.
	CertDir string
	// RefreshInterval of the file_watcher; default "600s".
	RefreshInterval string
	// Datacenter goes into node.locality.region (as EDS localities name their datacenter).
	// node.locality is always there, empty without a datacenter: grpc-js-xds refuses a
	// bootstrap whose node has none ("locality field missing in node element").
	Datacenter string
}

// GRPCBootstrap returns the gRPC xDS bootstrap JSON (gRFC A27) for a proxyless service: the
// xDS server (plaintext: see DESIGN.md, --xds-tls is for later), the node, the file_watcher
// certificate provider instance CertProviderInstance, and the server listener name template.
// grpc-go, gRPC C-core and grpc-js-xds all accept it (interop/ starts each on one).
func GRPCBootstrap(o GRPCBootstrapOptions) ([]byte, error) {
	if o.Service == "" {
		return nil, fmt.Errorf("grpc bootstrap: service is required")
	}
	if _, _, err := splitHostPort(o.XDSAddr); err != nil {
		return nil, fmt.Errorf("grpc bootstrap: xds address: %w", err)
	}
	id := o.NodeID
	if id == "" {
		id = o.Service + "-grpc"
	}
	refresh := o.RefreshInterval
	if refresh == "" {
		refresh = "600s"
	}
	locality := map[string]any{}
	if o.Datacenter != "" {
		locality["region"] = o.Datacenter
	}
	b := map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      o.XDSAddr,
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []any{"xds_v3"},
		}},
		"node": map[string]any{
			"id":       id,
			"cluster":  o.Service,
			"locality": locality,
			"metadata": map[string]any{ShapeMetadataKey: string(ShapeGRPC)},
		},
		"certificate_providers": map[string]any{
			CertProviderInstance: map[string]any{
				"plugin_name": "file_watcher",
				"config": map[string]any{
					"certificate_file":    filepath.Join(o.CertDir, "cert.pem"),
					"private_key_file":    filepath.Join(o.CertDir, "key.pem"),
					"ca_certificate_file": filepath.Join(o.CertDir, "ca.pem"),
					"refresh_interval":    refresh,
				},
			},
		},
		"server_listener_resource_name_template": GRPCServerListenerTemplate,
	}
	return json.MarshalIndent(b, "", "  ")
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return host, port, nil
}
