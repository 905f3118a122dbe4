package proxy

import (
	"context"
	"fmt"
	"sort"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgit/mesh/xds"
)

// UserAgent is the user_agent_name the proxy sends in its node.
const UserAgent = "mesh-builtin-proxy"

// run keeps an ADS stream open until ctx ends, reconnecting after RetryInterval.
func (p *Proxy) run(ctx context.Context) {
	for {
		err := p.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		p.log.Warn("xds stream ended; reconnecting", "err", err, "in", p.cfg.RetryInterval)
		t := time.NewTimer(p.cfg.RetryInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (p *Proxy) node() *corev3.Node {
	fields := map[string]any{xds.ShapeMetadataKey: string(xds.ShapeEnvoy)}
	if p.cfg.CertDir != "" {
		fields[xds.CertDirMetadataKey] = p.cfg.CertDir
	}
	if p.cfg.Kind != "" {
		fields[xds.KindMetadataKey] = p.cfg.Kind
	}
	md, _ := structpb.NewStruct(fields)
	return &corev3.Node{Id: p.cfg.ProxyID, Cluster: p.cfg.Service, UserAgentName: UserAgent, Metadata: md}
}

// adsState is one stream's bookkeeping: per type, the last accepted version and the last nonce.
type adsState struct {
	version map[string]string
	nonce   map[string]string
	edsSub  []string // the EDS names subscribed to
	ecdsSub []string // the extension configs (ECDS) subscribed to
	send    func(*discoveryv3.DiscoveryRequest) error
	node    *corev3.Node
	first   bool
}

func (a *adsState) request(typ string, names []string, errDetail error) error {
	req := &discoveryv3.DiscoveryRequest{
		TypeUrl: typ, VersionInfo: a.version[typ], ResponseNonce: a.nonce[typ], ResourceNames: names,
	}
	if !a.first {
		req.Node, a.first = a.node, true
	}
	if errDetail != nil {
		req.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: errDetail.Error()}
	}
	return a.send(req)
}

func (p *Proxy) stream(ctx context.Context) error {
	conn, err := grpc.NewClient(p.cfg.XDSAddr, p.cfg.DialOptions...)
	if err != nil {
		return err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
	if err != nil {
		return err
	}
	a := &adsState{version: map[string]string{}, nonce: map[string]string{}, send: st.Send, node: p.node()}
	// Clusters first, then listeners, as Envoy does; EDS once clusters name their assignments.
	if err := a.request(resourcev3.ClusterType, nil, nil); err != nil {
		return err
	}
	if err := a.request(resourcev3.ListenerType, nil, nil); err != nil {
		return err
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		if err := p.handle(a, resp); err != nil {
			return err
		}
	}
}

// handle applies one response and ACKs or NACKs it. Only a failure to send ends the stream.
func (p *Proxy) handle(a *adsState, resp *discoveryv3.DiscoveryResponse) error {
	typ := resp.GetTypeUrl()
	a.nonce[typ] = resp.GetNonce()
	var aerr error
	names := []string(nil)
	switch typ {
	case resourcev3.ClusterType:
		aerr = p.applyClusters(resp)
	case resourcev3.ListenerType:
		aerr = p.applyListeners(resp)
	case resourcev3.EndpointType:
		aerr = p.applyEndpoints(resp)
		names = a.edsSub
	case resourcev3.ExtensionConfigType:
		aerr = p.applyExtensions(resp)
		names = a.ecdsSub
	default:
		aerr = fmt.Errorf("%w: resource type %s", ErrUnsupported, typ)
	}
	if aerr != nil {
		p.log.Warn("xds response refused (NACK)", "type", typ, "version", resp.GetVersionInfo(), "err", aerr)
	} else {
		a.version[typ] = resp.GetVersionInfo()
		p.log.Info("xds response applied (ACK)", "type", typ, "version", resp.GetVersionInfo())
	}
	p.noteAck(typ, resp.GetVersionInfo(), aerr)
	if err := a.request(typ, names, aerr); err != nil {
		return err
	}
	if typ == resourcev3.ClusterType && aerr == nil {
		want := p.state.Load().edsNames()
		if !equalStrings(want, a.edsSub) {
			a.edsSub = want
			return a.request(resourcev3.EndpointType, want, nil)
		}
	}
	// The filter configurations the listeners take over ECDS, once they are bound.
	if typ == resourcev3.ListenerType && aerr == nil {
		want := p.extensionNames()
		if len(want) > 0 && !equalStrings(want, a.ecdsSub) {
			a.ecdsSub = want
			return a.request(resourcev3.ExtensionConfigType, want, nil)
		}
	}
	return nil
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
