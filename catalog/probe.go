package catalog

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// probe runs one HTTP, TCP or gRPC check within its Timeout and returns the status and output,
// with Consul's meaning: HTTP 2xx passing, 429 warning, anything else (or no answer) critical;
// TCP passing when it connects; gRPC passing when grpc.health.v1 answers SERVING.
func probe(ctx context.Context, c Check) (string, string) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	switch c.Type {
	case CheckHTTP:
		return probeHTTP(ctx, c)
	case CheckTCP:
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", c.TCP)
		if err != nil {
			return StatusCritical, fmt.Sprintf("TCP connect %s: %v", c.TCP, err)
		}
		conn.Close()
		return StatusPassing, fmt.Sprintf("TCP connect %s: Success", c.TCP)
	case CheckGRPC:
		return probeGRPC(ctx, c)
	}
	return StatusCritical, "unknown check type " + c.Type
}

func probeHTTP(ctx context.Context, c Check) (string, string) {
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
	tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: c.TLSSkipVerify}} //nolint:gosec // the registration asked for it
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

func probeGRPC(ctx context.Context, c Check) (string, string) {
	addr, service, _ := strings.Cut(c.GRPC, "/")
	creds := insecure.NewCredentials()
	if c.GRPCUseTLS {
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: c.TLSSkipVerify}) //nolint:gosec // the registration asked for it
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
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
