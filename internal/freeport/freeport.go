// Package freeport finds loopback addresses for servers a program is about to start (the demo,
// tests that run real processes). An address is free when returned, not reserved: another
// process may take it before it is used, so callers bind soon after.
package freeport

import "net"

// Addrs returns n distinct 127.0.0.1 addresses that were free a moment ago. Their listeners
// are held until all n are chosen, so the n are different from one another.
func Addrs(n int) ([]string, error) {
	out := make([]string, 0, n)
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}
