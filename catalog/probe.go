package catalog

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// ErrCheckNotAllowed is the reason of a check whose address lies outside Prober.Allow.
var ErrCheckNotAllowed = errors.New("address outside the networks checks may reach (--check-allow)")

// Prober runs HTTP, TCP and gRPC checks. Checks are defined by whoever registers an instance,
// and servers and agents run them from their own network position, so Allow, when not empty,
// lists the only networks a check may connect to: any other address is refused after name
// resolution and before a packet is sent, and the check is critical with ErrCheckNotAllowed.
// The zero Prober allows every address.
type Prober struct {
	Allow []netip.Prefix
}

// ParseAllow parses CIDR prefixes (or single addresses) for Prober.Allow.
func ParseAllow(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("check-allow %q: not a CIDR prefix or an address", s)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// control refuses a connection to an address outside Allow; it runs for every address the
// dialer tries, after name resolution.
func (p Prober) control(_, address string, _ syscall.RawConn) error {
	if len(p.Allow) == 0 {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%s: %w", address, ErrCheckNotAllowed)
	}
	for _, pre := range p.Allow {
		if pre.Contains(ap.Addr().Unmap()) {
			return nil
		}
	}
	return fmt.Errorf("%s: %w", address, ErrCheckNotAllowed)
}

func (p Prober) dialer() *net.Dialer { return &net.Dialer{Control: p.control} }

// probe runs one HTTP, TCP or gRPC check within its Timeout and returns the status and output,
// with Consul's meaning: HTTP 2xx passing, 429 warning, anything else (or no answer) critical;
// TCP passing when it connects; gRPC passing when grpc.health.v1 answers SERVING.
func (p Prober) probe(ctx context.Context, c Check) (string, string) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	switch c.Type {
	case CheckHTTP:
		return p.probeHTTP(ctx, c)
	case CheckTCP:
		conn, err := p.dialer().DialContext(ctx, "tcp", c.TCP)
		if err != nil {
			return StatusCritical, fmt.Sprintf("TCP connect %s: %v", c.TCP, err)
		}
		conn.Close()
		return StatusPassing, fmt.Sprintf("TCP connect %s: Success", c.TCP)
	case CheckGRPC:
		return p.probeGRPC(ctx, c)
	}
	return StatusCritical, "unknown check type " + c.Type
}

func (p Prober) probeHTTP(ctx context.Context, c Check) (string, string) {
	method := c.Method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequestWithContext(ctx, method, c.HTTP, nil)
	if err != nil {
		return StatusCritical, err.Error()
	}
	for k, vs := range c.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("User-Agent", "mesh health check")
	tr := &http.Transport{DisableKeepAlives: true, DialContext: p.dialer().DialContext, TLSClientConfig: &tls.Config{InsecureSkipVerify: c.TLSSkipVerify}} //nolint:gosec // the registration asked for it
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		return StatusCritical, fmt.Sprintf("HTTP %s %s: %v", method, c.HTTP, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	out := fmt.Sprintf("HTTP %s %s: %s Output: %s", method, c.HTTP, resp.Status, strings.TrimSpace(string(body)))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return StatusPassing, out
	case resp.StatusCode == http.StatusTooManyRequests:
		return StatusWarning, out
	}
	return StatusCritical, out
}

func (p Prober) probeGRPC(ctx context.Context, c Check) (string, string) {
	addr, service, _ := strings.Cut(c.GRPC, "/")
	creds := insecure.NewCredentials()
	if c.GRPCUseTLS {
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: c.TLSSkipVerify}) //nolint:gosec // the registration asked for it
	}
	dial := p.dialer()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return dial.DialContext(ctx, "tcp", a) }))
	if err != nil {
		return StatusCritical, fmt.Sprintf("gRPC %s: %v", c.GRPC, err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return StatusCritical, fmt.Sprintf("gRPC health %s: %v", c.GRPC, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return StatusCritical, fmt.Sprintf("gRPC health %s: %s", c.GRPC, resp.GetStatus())
	}
	return StatusPassing, fmt.Sprintf("gRPC health %s: SERVING", c.GRPC)
}
