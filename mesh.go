// Package mesh is the domain model of the control plane: the compiled Snapshot of a mesh
// repository (services, intentions, discovery chains), its canonical encoding and Version, and
// Authorize, the one implementation of the intention rules. CompareAccess and AllowsSome answer
// questions over every request (do two meshes ever disagree on a pair; is some request allowed)
// by searching the requests Authorize tells apart, never by re-implementing it; request paths
// are judged after the normalization Envoy applies (NormalizePath).
//
// Everything downstream of the compiler (xDS rendering, review, policies, the reconciler) reads
// this model and nothing else: it never sees CUE or Git. The package imports only the standard
// library. A Snapshot is immutable once compiled; all methods are safe for concurrent use.
package mesh

import (
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Protocols a service may speak.
const (
	ProtocolTCP   = "tcp"
	ProtocolHTTP  = "http"
	ProtocolHTTP2 = "http2"
	ProtocolGRPC  = "grpc"
)

// IsHTTP reports whether protocol is one whose requests have methods, paths and headers.
func IsHTTP(protocol string) bool {
	return protocol == ProtocolHTTP || protocol == ProtocolHTTP2 || protocol == ProtocolGRPC
}

// Wildcard names every service on either side of an intention.
const Wildcard = "*"

// ServerService is the reserved service name of the mesh servers' own identity: their xDS
// serving certificate is a leaf of the mesh CA for it, and proxies accept only that name as a
// server. No mesh may declare a service of that name, and the CA's API signs it for no token.
const ServerService = "mesh-server"

// Snapshot is a compiled mesh: every element sorted, defaults applied, durations parsed and
// discovery chains resolved into weighted targets.
//
// Version and Commit are not part of the content: Version is derived from it (see Canonical),
// Commit records the Git commit it was compiled from. Positions maps element paths (see the Path*
// functions) to where they were written; it too is left out of the canonical encoding, so that
// moving a definition to another file changes nothing.
type Snapshot struct {
	Version    string               `json:"version"`
	Commit     string               `json:"commit"`
	Mesh       Config               `json:"mesh"`
	Services   map[string]*Service  `json:"services"`
	Intentions []*Intention         `json:"intentions"`
	Routers    map[string]*Router   `json:"routers,omitempty"`
	Splitters  map[string]*Splitter `json:"splitters,omitempty"`
	Resolvers  map[string]*Resolver `json:"resolvers,omitempty"`
	// Chains holds the resolved discovery chain of every service, keyed by service name.
	Chains map[string]*Chain `json:"chains"`
	// RemoteChains are the chains of upstreams that name another datacenter, by
	// RemoteChainKey ("api@dc2").
	RemoteChains map[string]*Chain `json:"remoteChains,omitempty"`
	// VirtualIPs maps every service to its virtual IP (see AssignVirtualIPs) when some service
	// is in transparent mode: what a transparent sidecar matches the destination address of an
	// outbound connection against.
	VirtualIPs map[string]string `json:"virtualIPs,omitempty"`
	Positions  map[string]Pos    `json:"positions,omitempty"`
	// MeshGateways are the mesh gateways known live (never from Git, not in the canonical
	// encoding), by datacenter: the local datacenter's from the catalog, others' from
	// federation. Sidecars reach upstreams in other datacenters through them (MeshGatewayMode).
	MeshGateways map[string][]Gateway `json:"meshGateways,omitempty"`
	// RemoteHealthy counts, by datacenter then service, the instances that are not critical in
	// the other datacenters (from federation; live, not in the canonical encoding). A datacenter
	// absent here is not known: its targets are assumed reachable.
	RemoteHealthy map[string]map[string]int `json:"remoteHealthy,omitempty"`

	indexOnce sync.Once
	index     map[string]map[string]*Intention // destination → source → intention
	reach     sync.Map                         // source → []string, memo of Reachable
	reachOnce sync.Once
	reachIdxV *reachIdx // what Reachable needs of the intentions (transparent.go)
	ups       sync.Map  // service → []*Upstream, memo of Upstreams
}

// Config is the mesh-wide configuration (the `mesh` field of the repository).
type Config struct {
	Name             string   `json:"name"`
	TrustDomain      string   `json:"trustDomain"`
	Datacenter       string   `json:"datacenter"`
	Datacenters      []string `json:"datacenters"`
	DefaultIntention Action   `json:"defaultIntention"`
	TLS              TLS      `json:"tls"`
	CA               CA       `json:"ca"`
	Policies         []string `json:"policies,omitempty"`
	// Mode is the proxy mode of every service that sets none (ModeDirect when empty).
	Mode string `json:"mode,omitempty"`
	// TransparentProxy holds the settings of transparent sidecars.
	TransparentProxy TransparentProxy `json:"transparentProxy,omitzero"`
	// MeshGateway is the default mode of upstreams in other datacenters; left out of the
	// canonical encoding when unset, so that meshes without it keep their versions.
	MeshGateway MeshGateway `json:"meshGateway,omitzero"`
}

// TransparentProxy holds the mesh-wide settings of transparent sidecars, as Consul's mesh
// config entry: with MeshDestinationsOnly, a connection to an address that is no service's
// virtual IP is closed; without it, it passes through to its original destination.
type TransparentProxy struct {
	MeshDestinationsOnly bool `json:"meshDestinationsOnly,omitempty"`
}

// MeshGateway holds Consul's mesh gateway settings.
type MeshGateway struct {
	// Mode is MeshGatewayLocal, MeshGatewayRemote, MeshGatewayNone or "" (none).
	Mode string `json:"mode,omitempty"`
}

// Mesh gateway modes, Consul's: how a sidecar reaches an upstream in another datacenter.
const (
	// MeshGatewayNone: straight to the remote endpoints (they must be reachable).
	MeshGatewayNone = "none"
	// MeshGatewayLocal: through the local datacenter's gateways (LAN), which forward to the
	// remote datacenter's gateways (WAN).
	MeshGatewayLocal = "local"
	// MeshGatewayRemote: straight to the remote datacenter's gateways (WAN).
	MeshGatewayRemote = "remote"
)

// KindMeshGateway is the catalog Kind of a mesh gateway instance (Consul's name).
const KindMeshGateway = "mesh-gateway"

// Gateway is one mesh gateway instance: its LAN address (what proxies of its own datacenter
// dial) and its WAN address (what other datacenters dial; the LAN one when it has none).
type Gateway struct {
	Service    string `json:"service"`
	Address    string `json:"address"`
	Port       int    `json:"port"`
	WANAddress string `json:"wanAddress,omitempty"`
	WANPort    int    `json:"wanPort,omitempty"`
	// Health is as Endpoint.Health: "" (unknown), passing, warning or critical.
	Health string `json:"health,omitempty"`
}

// WAN returns the address other datacenters dial.
func (g Gateway) WAN() (string, int) {
	if g.WANAddress == "" {
		return g.Address, g.Port
	}
	if g.WANPort == 0 {
		return g.WANAddress, g.Port
	}
	return g.WANAddress, g.WANPort
}

// GatewayMode returns the mesh gateway mode of upstream u: its own override, else the mesh's,
// else MeshGatewayNone.
func (c *Config) GatewayMode(u *Upstream) string {
	if u != nil && u.MeshGateway != "" {
		return u.MeshGateway
	}
	if c.MeshGateway.Mode != "" {
		return c.MeshGateway.Mode
	}
	return MeshGatewayNone
}

// TLS holds the mesh-wide TLS settings applied to every mTLS connection.
type TLS struct {
	MinVersion   string   `json:"minVersion"`
	MaxVersion   string   `json:"maxVersion,omitempty"`
	CipherSuites []string `json:"cipherSuites,omitempty"`
}

// CA holds the settings of the built-in certificate authority.
type CA struct {
	LeafTTL Duration `json:"leafTTL"`
}

// Service is a catalog entry together with its service defaults.
type Service struct {
	Name     string            `json:"name"`
	Protocol string            `json:"protocol"`
	Port     int               `json:"port"`
	Owners   []string          `json:"owners,omitempty"`
	Meta     map[string]string `json:"meta,omitempty"`
	// Mode is ModeTransparent when the service's sidecar reaches every service its intentions
	// allow (set by the service, by the mesh, or by `upstreams: "*"`); empty otherwise.
	Mode string `json:"mode,omitempty"`
	// Upstreams are the upstreams the service declares, each with its local port. In
	// transparent mode the service reaches more (see Snapshot.Upstreams).
	Upstreams   map[string]*Upstream `json:"upstreams,omitempty"`
	Endpoints   []Endpoint           `json:"endpoints,omitempty"`
	HealthCheck *HealthCheck         `json:"healthCheck,omitempty"`
}

// Upstream is a service that a service calls, and where its sidecar listens for those calls.
type Upstream struct {
	Service    string `json:"service"`
	LocalPort  int    `json:"localPort"`
	Datacenter string `json:"datacenter,omitempty"`
	// MeshGateway overrides mesh.meshGateway.mode for this upstream ("" keeps it).
	MeshGateway string `json:"meshGateway,omitempty"`
}

// Endpoint is one instance of a service.
type Endpoint struct {
	Address    string            `json:"address"`
	Port       int               `json:"port"`
	Datacenter string            `json:"datacenter"`
	Meta       map[string]string `json:"meta,omitempty"`
	// Health and Weight come from the live catalog (never from Git): Health is "" (unknown,
	// routed to), "passing", "warning" or "critical" (sent to proxies as unhealthy, not routed
	// to); Weight is the load-balancing weight, 0 meaning 1.
	Health string `json:"health,omitempty"`
	Weight int    `json:"weight,omitempty"`
}

// Endpoint health, the catalog's status words.
const (
	HealthPassing  = "passing"
	HealthWarning  = "warning"
	HealthCritical = "critical"
)

// WithServices returns a copy of s whose Services are services, everything else shared (the
// live catalog's instances are added this way). The copy keeps s's Version: it is the version
// of the configuration from Git, and services must differ from s's only in endpoints.
func (s *Snapshot) WithServices(services map[string]*Service) *Snapshot {
	s.indexOnce.Do(s.buildIndex)
	c := &Snapshot{Version: s.Version, Commit: s.Commit, Mesh: s.Mesh, Services: services, Intentions: s.Intentions,
		Routers: s.Routers, Splitters: s.Splitters, Resolvers: s.Resolvers, Chains: s.Chains,
		RemoteChains: s.RemoteChains, VirtualIPs: s.VirtualIPs, Positions: s.Positions, MeshGateways: s.MeshGateways, RemoteHealthy: s.RemoteHealthy}
	c.indexOnce.Do(func() { c.index = s.index })
	// What services reach depends on their names, modes, upstreams and the intentions, which
	// are s's: the answers found so far hold for the copy too.
	s.reach.Range(func(k, v any) bool { c.reach.Store(k, v); return true })
	s.ups.Range(func(k, v any) bool { c.ups.Store(k, v); return true })
	return c
}

// WithRemote returns a shallow copy of s with the other datacenters' gateways and health.
func (s *Snapshot) WithRemote(gws map[string][]Gateway, healthy map[string]map[string]int) *Snapshot {
	c := s.WithServices(s.Services)
	c.MeshGateways, c.RemoteHealthy = gws, healthy
	return c
}

// WithMeshGateways returns a shallow copy of s whose MeshGateways are gws.
func (s *Snapshot) WithMeshGateways(gws map[string][]Gateway) *Snapshot {
	c := s.WithServices(s.Services)
	c.MeshGateways = gws
	return c
}

// HealthCheck says how an endpoint's health is probed: exactly one of HTTP (a path), TCP or GRPC.
type HealthCheck struct {
	HTTP     string   `json:"http,omitempty"`
	TCP      bool     `json:"tcp,omitempty"`
	GRPC     string   `json:"grpc,omitempty"`
	Interval Duration `json:"interval"`
	Timeout  Duration `json:"timeout"`
}

// Router is a service-router: its routes are tried in order and the first match wins.
type Router struct {
	Routes []Route `json:"routes"`
}

// Route is one route of a router as written, before chain resolution.
type Route struct {
	Match       *HTTPMatch       `json:"match,omitempty"`
	Destination RouteDestination `json:"destination"`
}

// RouteDestination is where a matching route sends requests, and how.
type RouteDestination struct {
	Service        string   `json:"service"`
	Subset         string   `json:"subset,omitempty"`
	PrefixRewrite  string   `json:"prefixRewrite,omitempty"`
	RequestTimeout Duration `json:"requestTimeout,omitempty"`
	NumRetries     int      `json:"numRetries,omitempty"`
	RetryOn        []string `json:"retryOn,omitempty"`
}

// Splitter is a service-splitter. Weights are in hundredths of a percent and sum to 10000.
type Splitter struct {
	Splits []Split `json:"splits"`
}

// Split is one weighted leg of a splitter.
type Split struct {
	Weight  int    `json:"weight"` // hundredths of a percent
	Service string `json:"service"`
	Subset  string `json:"subset,omitempty"`
}

// Resolver is a service-resolver: subsets, the default subset, failover, redirect and load balancing.
type Resolver struct {
	DefaultSubset  string              `json:"defaultSubset,omitempty"`
	Subsets        map[string]Subset   `json:"subsets,omitempty"`
	ConnectTimeout Duration            `json:"connectTimeout,omitempty"`
	Failover       map[string]Failover `json:"failover,omitempty"`
	Redirect       *Redirect           `json:"redirect,omitempty"`
	LoadBalancer   *LoadBalancer       `json:"loadBalancer,omitempty"`
}

// Subset selects the endpoints whose meta has every key of Filter with the same value.
type Subset struct {
	Filter map[string]string `json:"filter"`
}

// Failover names where a subset's traffic goes when it has no healthy endpoint: the same subset
// of Service (default: the same service) in each of Datacenters, in order.
type Failover struct {
	Service     string   `json:"service,omitempty"`
	Datacenters []string `json:"datacenters"`
}

// Redirect sends every request for a service to another service, subset or datacenter.
type Redirect struct {
	Service    string `json:"service,omitempty"`
	Subset     string `json:"subset,omitempty"`
	Datacenter string `json:"datacenter,omitempty"`
}

// Load-balancing policies.
const (
	LBRoundRobin   = "round_robin"
	LBLeastRequest = "least_request"
	LBRandom       = "random"
	LBRingHash     = "ring_hash"
	LBMaglev       = "maglev"
)

// LoadBalancer selects the load-balancing policy of a service's clusters.
type LoadBalancer struct {
	Policy string `json:"policy"`
}

// Service returns the named service, or nil.
func (s *Snapshot) Service(name string) *Service { return s.Services[name] }

// ServiceNames returns the names of all services, sorted.
func (s *Snapshot) ServiceNames() []string {
	names := make([]string, 0, len(s.Services))
	for n := range s.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Pos returns the position recorded for an element path, or the zero Pos.
func (s *Snapshot) Pos(path string) Pos { return s.Positions[path] }

// Element paths, the keys of Snapshot.Positions.

// PathTrustDomain is the path of mesh.trustDomain.
const PathTrustDomain = "mesh.trustDomain"

// PathMeshTLS is the path of the mesh-wide TLS settings (recorded when the mesh sets them).
const PathMeshTLS = "mesh.tls"

// PathService is the path of a service definition.
func PathService(name string) string { return "services." + name }

// PathIntention is the path of the intention from source to destination.
func PathIntention(destination, source string) string {
	return "intentions." + destination + "." + source
}

// PathPermission is the path of the i-th permission of an intention.
func PathPermission(destination, source string, i int) string {
	return fmt.Sprintf("intentions.%s.%s.permissions.%d", destination, source, i)
}

// PathRoute is the path of the i-th route of a service's router.
func PathRoute(service string, i int) string { return fmt.Sprintf("routers.%s.routes.%d", service, i) }

// PathSplitter, PathResolver and PathRouter are the paths of a service's chain entries.
func PathSplitter(service string) string { return "splitters." + service }
func PathResolver(service string) string { return "resolvers." + service }
func PathRouter(service string) string   { return "routers." + service }

// Duration is a time.Duration written as a Go/Envoy duration string ("250ms", "3s"). Its JSON
// form is time.Duration's String, so "60s" and "1m" encode alike.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// IsZero reports whether d is zero, for omitempty-style handling.
func (d Duration) IsZero() bool { return d == 0 }

// MarshalJSON encodes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON decodes a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}
