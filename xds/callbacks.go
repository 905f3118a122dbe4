package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// callbacks are the go-control-plane server callbacks of a Server. They run on the stream's
// goroutine before the request reaches the cache, which is what lets a node that connects
// after SetSnapshot get its configuration rendered on its first request.
type callbacks Server

func (c *callbacks) s() *Server { return (*Server)(c) }

func (c *callbacks) OnStreamOpen(ctx context.Context, id int64, typeURL string) error {
	return c.s().open(ctx, id, false)
}

func (c *callbacks) OnDeltaStreamOpen(ctx context.Context, id int64, typeURL string) error {
	return c.s().open(ctx, deltaStreamID(id), true)
}

// deltaStreamID is the key of delta stream id among the server's streams. go-control-plane
// numbers state-of-the-world and delta streams with separate counters, so the first stream of
// each kind is both 1: delta streams are kept under the negated number. Without this, a
// state-of-the-world proxy and a delta proxy connected at the same time shared one stream's
// state, and one of them was never registered, so never configured.
func deltaStreamID(id int64) int64 { return -id }

func (s *Server) open(ctx context.Context, id int64, delta bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return status.Error(codes.Unavailable, ErrClosed.Error())
	}
	if s.suspended != "" {
		return status.Error(codes.Unavailable, "xDS suspended: "+s.suspended)
	}
	st := newStreamState(delta)
	st.kill = streamKiller(ctx)
	if s.authPeers {
		pi := peerIdentityFrom(ctx)
		st.peer = &pi
	}
	s.streams[id] = st
	return nil
}

func (c *callbacks) OnStreamClosed(id int64, _ *corev3.Node) { c.s().streamClosed(id) }
func (c *callbacks) OnDeltaStreamClosed(id int64, _ *corev3.Node) {
	c.s().streamClosed(deltaStreamID(id))
}

// OnStreamRequest registers the node on its first request, and records ACKs and NACKs.
//
// A NACK's version_info is the last version the client accepted, which differs from the cache's
// version, so go-control-plane would answer it at once with the very configuration that was just
// rejected, and again after every NACK (a NACK storm). Rewriting the request's version to the
// rejected one makes the cache wait for the next change instead.
func (c *callbacks) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	s := c.s()
	s.mu.Lock()
	defer s.mu.Unlock()
	nd, err := s.nodeFor(id, req.GetNode(), false)
	if err != nil {
		return err
	}
	if nacked := s.recordAck(id, nd, req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail()); nacked != "" {
		req.VersionInfo = nacked
	}
	return nil
}

func (c *callbacks) OnStreamResponse(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	c.s().sent(id, resp.GetTypeUrl(), resp.GetNonce(), resp.GetVersionInfo())
}

// sentRecorder is implemented by callbacks that take what OnStreamResponse and
// OnStreamDeltaResponse take of a response of the server's own ADS servers without a response
// message being built for them: the type URL, nonce and version of what stream id was sent.
type sentRecorder interface {
	sotwSent(id int64, typeURL, nonce, version string)
	deltaSent(id int64, typeURL, nonce, version string)
}

func (c *callbacks) sotwSent(id int64, typeURL, nonce, version string) {
	c.s().sent(id, typeURL, nonce, version)
}

func (c *callbacks) deltaSent(id int64, typeURL, nonce, version string) {
	c.s().sent(deltaStreamID(id), typeURL, nonce, version)
}

func (c *callbacks) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	id = deltaStreamID(id)
	s := c.s()
	s.mu.Lock()
	defer s.mu.Unlock()
	nd, err := s.nodeFor(id, req.GetNode(), true)
	if err != nil {
		return err
	}
	s.recordAck(id, nd, req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail())
	return nil
}

func (c *callbacks) OnStreamDeltaResponse(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	c.s().sent(deltaStreamID(id), resp.GetTypeUrl(), resp.GetNonce(), resp.GetSystemVersionInfo())
}

// OnFetchRequest renders the configuration of a REST client (no stream) if needed.
func (c *callbacks) OnFetchRequest(ctx context.Context, req *discoveryv3.DiscoveryRequest) error {
	s := c.s()
	var pi *peerIdentity
	if s.authPeers {
		v := peerIdentityFrom(ctx)
		pi = &v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return status.Error(codes.Unavailable, ErrClosed.Error())
	}
	if s.suspended != "" {
		return status.Error(codes.Unavailable, "xDS suspended: "+s.suspended)
	}
	p, err := ProxyFromNode(req.GetNode())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.authorizePeer(pi, req.GetNode(), p, 0); err != nil {
		return err
	}
	if s.snap == nil {
		return status.Error(codes.Unavailable, "no snapshot yet")
	}
	g := s.groups[p]
	if !s.current(p, g) {
		if g, err = s.render(s.snap, s.bundle, s.memo, p, g, false); err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		if g.err != nil {
			return status.Error(codes.NotFound, g.err.Error())
		}
	}
	if g.cs == nil {
		return status.Error(codes.NotFound, fmt.Sprintf("no configuration for %s", p))
	}
	return s.cache.SetSnapshot(s.ctx, req.GetNode().GetId(), g.cs)
}

func (c *callbacks) OnFetchResponse(*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {}

func (s *Server) sent(id int64, typeURL, nonce, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.streams[id]; st != nil {
		st.sent[typeURL] = sentResponse{nonce: nonce, version: version}
	}
}

func errorsIsUnknown(err error) bool { return errors.Is(err, ErrUnknownService) }

// cplLogger adapts slog to go-control-plane's logger. go-control-plane's info messages are
// per-request chatter, so they go to debug.
type cplLogger struct{ l *slog.Logger }

func (l cplLogger) Debugf(format string, args ...any) {
	if l.l.Enabled(context.Background(), slog.LevelDebug) {
		l.l.Debug(fmt.Sprintf(format, args...))
	}
}
func (l cplLogger) Infof(format string, args ...any)  { l.Debugf(format, args...) }
func (l cplLogger) Warnf(format string, args ...any)  { l.l.Warn(fmt.Sprintf(format, args...)) }
func (l cplLogger) Errorf(format string, args ...any) { l.l.Error(fmt.Sprintf(format, args...)) }
