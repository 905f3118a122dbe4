//go:build !unix

package proxy

import "net"

// waitReadable does not wait where the connection cannot be peeked at: the read that follows
// blocks instead, holding its buffer.
func waitReadable(*net.TCPConn) error { return nil }
