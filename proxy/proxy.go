// Package proxy is mesh's built-in L4 proxy (Consul's built-in proxy): an xDS client of a mesh
// server that runs a service's sidecar, or a mesh gateway, on hosts without Envoy.
//
// It guarantees:
//   - It asks for the configuration of an Envoy sidecar (node cluster = the service, shape envoy)
//     over one ADS stream and ACKs a response only once it is applied: every listener bound and
//     every rule compiled. A resource it cannot honour exactly (an HTTP connection manager, a
//     listener filter, an RBAC rule of a kind it does not evaluate, a TLS context it cannot
//     enforce) makes it NACK the whole response with an error that names the resource and what is
//     missing, and keep running what it ran before, as Envoy does.
//   - Inbound (public_listener): mTLS is terminated with the files `mesh agent` writes (cert.pem,
//     key.pem, ca.pem, read again when they change), a client certificate from the trust bundle is
//     required, and the network RBAC rules of the listener decide on the caller's SPIFFE ID before
//     a single byte reaches the application (local_app). The rules may be inline or, as the mesh
//     server sends them, an extension configuration (ECDS) the RBAC filter names: the proxy
//     subscribes to what its listeners name, a connection waits for the first rules (Envoy's
//     warming) and gets the filter's default (deny-all) if they do not come, or is refused
//     without a default (extensions.go).
//   - Outbound (one listener per upstream, 127.0.0.1:localPort): each connection goes to an
//     endpoint of the cluster's EDS assignment (the lowest priority with a healthy endpoint), over
//     mTLS with the cluster's SNI, and is dropped unless the server's certificate chains to the
//     trust bundle and names one of the SPIFFE IDs the cluster's TLS context lists.
//   - As a mesh gateway (Kind mesh-gateway), it reads the SNI of each connection's ClientHello
//     (tls_inspector) and passes the connection, ClientHello included, to the cluster its filter
//     chain names (a remote datacenter's gateways) or to the cluster the SNI names (sni_cluster,
//     a local target); it holds no certificate and never decrypts.
//   - Bytes are copied as they come, both ways, with half-closes passed on (a TCP FIN, or a TLS
//     close_notify on a TLS side). Between two TCP connections (a gateway) the kernel copies
//     (splice); with TLS on a side, in chunks of up to 256 KiB whose records leave in one write.
//     An idle connection holds no copy buffer.
//   - TLS sessions are resumed between sidecars; a resumed handshake is verified as a full one
//     (chain against the current roots, the accepted SPIFFE IDs, RBAC), and new certificate
//     files forget every session.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	mesh "github.com/meshgit/mesh"
)

// Errors.
var (
	// ErrUnsupported wraps the reason of a NACK: a resource the proxy cannot honour.
	ErrUnsupported = errors.New("not supported by the built-in proxy")
	// ErrDenied is why an inbound connection was closed: RBAC refused the caller.
	ErrDenied = errors.New("denied by RBAC")
	// ErrNoEndpoint is why an outbound connection was closed: the cluster has no endpoint.
	ErrNoEndpoint = errors.New("no endpoint")
	// ErrBadConfig is a configuration of the proxy itself that cannot work.
	ErrBadConfig = errors.New("bad proxy configuration")
)

// Config configures a Proxy.
type Config struct {
	// XDSAddr is the mesh server's xDS address (HOST:PORT).
	XDSAddr string
	// DialOptions are the gRPC options of the xDS connection (default: plaintext).
	DialOptions []grpc.DialOption
	// Service is the service the proxy runs for (the node's cluster); ProxyID the node id.
	Service, ProxyID string
	// CertDir holds cert.pem, key.pem and ca.pem (what `mesh agent --dir` writes). A mesh
	// gateway needs none: it never terminates TLS.
	CertDir string
	// Kind is "" for a sidecar or mesh.KindMeshGateway for a mesh gateway, which routes the
	// connections it accepts by their SNI, without decrypting them.
	Kind string
	// InboundHost, if set, replaces the host of inbound listeners' addresses (rendered as
	// 0.0.0.0): "127.0.0.1" keeps a test on loopback.
	InboundHost string
	// Log receives the proxy's events (default: discard).
	Log *slog.Logger
	// RetryInterval is the pause before reconnecting a broken xDS stream (default 1s).
	RetryInterval time.Duration
}

// Proxy is a running built-in proxy. Open starts it; Close stops it.
type Proxy struct {
	cfg   Config
	log   *slog.Logger
	certs *certFiles

	state   atomic.Pointer[state] // clusters and endpoints as last ACKed
	ext     *extensions           // filter configurations over ECDS, as last ACKed
	spliced atomic.Int64          // connections the kernel relayed both ways (splice)
	resumed atomic.Int64          // inbound connections that resumed a TLS session
	// extWait bounds the wait of a connection for its filter's first configuration.
	extWait time.Duration

	mu        sync.Mutex
	listeners map[string]*listener // by name
	status    Status

	cancel context.CancelFunc
	done   chan struct{}
}

// Status is what the proxy last did with each resource type.
type Status struct {
	// Acked is the last version ACKed per type URL.
	Acked map[string]string
	// LastNACK is the error of the last NACK ("" when none since the last ACK of that type).
	LastNACK map[string]string
	// Listeners are the names of the listeners bound now, with their addresses.
	Listeners map[string]string
}

// New checks cfg and returns a proxy that is not running yet.
func New(cfg Config) (*Proxy, error) {
	if cfg.Kind != "" && cfg.Kind != mesh.KindMeshGateway {
		return nil, fmt.Errorf("%w: kind %q (want %q or none)", ErrBadConfig, cfg.Kind, mesh.KindMeshGateway)
	}
	if cfg.XDSAddr == "" || cfg.Service == "" || cfg.CertDir == "" && cfg.Kind == "" {
		return nil, fmt.Errorf("%w: the xDS address, the service and (for a sidecar) the certificate directory are required", ErrBadConfig)
	}
	if cfg.ProxyID == "" {
		cfg.ProxyID = cfg.Service + "-proxy"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Second
	}
	if cfg.DialOptions == nil {
		cfg.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	p := &Proxy{cfg: cfg, log: cfg.Log, certs: newCertFiles(cfg.CertDir), listeners: map[string]*listener{},
		ext: newExtensions(), extWait: extensionWait}
	p.state.Store(&state{clusters: map[string]*cluster{}, endpoints: map[string]*assignment{}})
	p.status = Status{Acked: map[string]string{}, LastNACK: map[string]string{}, Listeners: map[string]string{}}
	return p, nil
}

// Open starts the xDS client; it returns at once.
func (p *Proxy) Open() {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.done = cancel, make(chan struct{})
	go func() {
		defer close(p.done)
		p.run(ctx)
	}()
}

// Close stops the xDS client and closes every listener (connections in flight are closed too).
func (p *Proxy) Close(ctx context.Context) error {
	if p.cancel != nil {
		p.cancel()
		select {
		case <-p.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, l := range p.listeners {
		l.close()
		delete(p.listeners, name)
	}
	return nil
}

// Status returns a copy of the proxy's status.
func (p *Proxy) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := Status{Acked: map[string]string{}, LastNACK: map[string]string{}, Listeners: map[string]string{}}
	for k, v := range p.status.Acked {
		out.Acked[k] = v
	}
	for k, v := range p.status.LastNACK {
		out.LastNACK[k] = v
	}
	for k, l := range p.listeners {
		out.Listeners[k] = l.ln.Addr().String()
	}
	return out
}

func (p *Proxy) noteAck(typ, version string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.status.LastNACK[typ] = err.Error()
		return
	}
	p.status.Acked[typ] = version
	delete(p.status.LastNACK, typ)
}
