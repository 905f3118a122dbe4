//go:build unix

package proxy

import (
	"errors"
	"net"
	"syscall"
)

// waitReadable waits until c has data, an end or an error to read (a peek, no buffer), or
// until its read deadline or its closing.
func waitReadable(c *net.TCPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var one [1]byte
	return rc.Read(func(fd uintptr) bool {
		for {
			_, _, err := syscall.Recvfrom(int(fd), one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			switch {
			case errors.Is(err, syscall.EINTR):
				continue
			case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EWOULDBLOCK):
				return false
			}
			return true // data, an end or an error: the read that follows reports it
		}
	})
}
