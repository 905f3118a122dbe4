package catalog

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestProberAllow: a check of an address outside Allow is critical with the reason and sends
// nothing (the refused address is TEST-NET-1, which no test may reach); one inside is probed.
func TestProberAllow(t *testing.T) {
	allow, err := ParseAllow([]string{"127.0.0.0/8", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}; len(allow) != 2 || allow[0] != want[0] || allow[1] != want[1] {
		t.Fatalf("ParseAllow: %v, want %v", allow, want)
	}
	p := Prober{Allow: allow}
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer web.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	ctx := context.Background()
	check := func(c Check) (string, string) {
		c.Timeout = 5 * time.Second
		start := time.Now()
		status, out := p.probe(ctx, c)
		if time.Since(start) > 2*time.Second {
			t.Errorf("%+v took %v: a refused address must fail before any packet", c, time.Since(start))
		}
		return status, out
	}
	for _, c := range []Check{
		{Type: CheckTCP, CheckDefinition: CheckDefinition{TCP: "192.0.2.1:80"}},
		{Type: CheckHTTP, CheckDefinition: CheckDefinition{HTTP: "http://192.0.2.1/healthz"}},
		{Type: CheckGRPC, CheckDefinition: CheckDefinition{GRPC: "192.0.2.1:9090"}},
	} {
		if status, out := check(c); status != StatusCritical || !strings.Contains(out, ErrCheckNotAllowed.Error()) {
			t.Errorf("%s check of 192.0.2.1: %s %q, want critical with %q", c.Type, status, out, ErrCheckNotAllowed)
		}
	}
	if status, out := check(Check{Type: CheckTCP, CheckDefinition: CheckDefinition{TCP: ln.Addr().String()}}); status != StatusPassing {
		t.Errorf("TCP check of an allowed listener: %s %q", status, out)
	}
	if status, out := check(Check{Type: CheckHTTP, CheckDefinition: CheckDefinition{HTTP: web.URL}}); status != StatusPassing {
		t.Errorf("HTTP check of an allowed server: %s %q", status, out)
	}
	if _, err := ParseAllow([]string{"10.0.0.0/33"}); err == nil {
		t.Error("ParseAllow accepted 10.0.0.0/33")
	}
}
