package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"testing"
	"time"
)

// TestMain lets the test binary play the demo's helper roles, as the demo binary does.
func TestMain(m *testing.M) {
	// Servers and agents started by these tests (in process or as processes) health-check only
	// loopback addresses: the meshes' Git endpoints are often 10.x, and tests stay on loopback.
	os.Setenv("MESH_CHECK_ALLOW", "127.0.0.0/8,::1/128")
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runRole(role, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// TestDemo runs the whole demo with real processes (a mesh server on a Git repository, two
// agents, a proxyless gRPC server and its client) and checks what it shows: the allowed call
// answered, the denied call refused by the server's RBAC, and after the commit the same call
// answered.
func TestDemo(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), &out, options{timeout: 100 * time.Second})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`(?m)^    web → payments /shop.payments.Payments/Charge: allowed \(payments ran /shop.payments.Payments/Charge for order-42\)$`,
		`(?m)^    web → payments /shop.payments.Payments/Refund: denied \(incoming RPC did not match an allow policy\)$`,
		`(?m)^      deny: .*$`,
		`(?m)^    \S+/certs/payments/\{cert,key,ca\}\.pem written: spiffe://shop\.mesh/ns/default/dc/dc1/svc/payments, valid until `,
		`(?m)^    web → payments /shop.payments.Payments/Refund: allowed \(payments ran /shop.payments.Payments/Refund for order-42\), [0-9.]+s after the commit$`,
	} {
		if !regexp.MustCompile(want).Match(out.Bytes()) {
			t.Errorf("the demo's output has no line matching %s", want)
		}
	}
}
