package freeport

import (
	"net"
	"testing"
)

func TestAddrsAreDistinctAndFree(t *testing.T) {
	addrs, err := Addrs(5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, a := range addrs {
		if seen[a] {
			t.Fatalf("%s returned twice: %v", a, addrs)
		}
		seen[a] = true
		host, _, err := net.SplitHostPort(a)
		if err != nil || host != "127.0.0.1" {
			t.Fatalf("%q: not a loopback address (%v)", a, err)
		}
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("%s is not free: %v", a, err)
		}
		l.Close()
	}
}
