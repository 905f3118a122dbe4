package proxy

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
)

// The data path. Between two TCP connections (a mesh gateway, which never decrypts) the kernel
// moves the bytes: (*net.TCPConn).ReadFrom of another *net.TCPConn is splice(2) on Linux, and
// no byte enters user space. With TLS on a side, bytes are copied in chunks of copyBufSize,
// and the TCP connection under each tls.Conn is a recordConn, so that the up to 16 records one
// chunk becomes leave in one write, and the records already received are opened in one go:
// a few system calls per chunk instead of one per 16 KiB record. Idle connections hold no
// buffer: a copy waits for its source to be readable before it takes one from the pool.

// copyBufSize is the chunk of a user-space copy.
const copyBufSize = 256 << 10

const (
	recordHeaderLen = 5
	// maxRecordLen is the longest TLS record on the wire (2^14 bytes of plaintext and up to
	// 2048 bytes of expansion).
	maxRecordLen = recordHeaderLen + 1<<14 + 2048
	// maxPlaintext is the most one record decrypts to: a tls.Conn read with that much room
	// returns a whole record.
	maxPlaintext = 1 << 14
)

// bufPool holds the buffers of copies and of recordConns: a chunk and the records it becomes.
var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize+16*(maxRecordLen-maxPlaintext)+maxRecordLen); return &b }}

// pipe copies both ways until both directions end, passing half-closes on; spliced reports
// whether the kernel copied both ways.
func pipe(a, b net.Conn) (spliced bool) {
	var wg sync.WaitGroup
	var ab, ba bool
	wg.Add(2)
	go func() { defer wg.Done(); _, ab, _ = copyHalf(a, b) }()
	go func() { defer wg.Done(); _, ba, _ = copyHalf(b, a) }()
	wg.Wait()
	a.Close()
	b.Close()
	return ab && ba
}

type closeWriter interface{ CloseWrite() error }

// copyHalf copies src to dst until src ends, then half-closes dst (a TCP FIN, or a TLS
// close_notify); an error (a reset) on either side closes both. spliced reports whether the
// kernel copied (both sides plain TCP).
func copyHalf(dst, src net.Conn) (n int64, spliced bool, err error) {
	d, dok := dst.(*net.TCPConn)
	s, sok := src.(*net.TCPConn)
	if dok && sok {
		n, err = d.ReadFrom(s) // splice(2)
		spliced = true
	} else {
		n, err = copyChunks(dst, src)
	}
	if cw, ok := dst.(closeWriter); ok && err == nil {
		if err = cw.CloseWrite(); err == nil {
			return n, spliced, nil
		}
	}
	dst.Close()
	src.Close()
	return n, spliced, err
}

// copyChunks copies src to dst in chunks of up to copyBufSize, with a pooled buffer held only
// while a chunk is in flight.
func copyChunks(dst, src net.Conn) (int64, error) {
	var total int64
	for {
		if err := waitData(src); err != nil {
			return total, eofNil(err)
		}
		bp := bufPool.Get().(*[]byte)
		buf := (*bp)[:copyBufSize]
		k, rerr := readChunk(src, buf)
		var werr error
		if k > 0 {
			werr = writeChunk(dst, buf[:k])
		}
		bufPool.Put(bp)
		total += int64(k)
		switch {
		case werr != nil:
			return total, werr
		case rerr != nil:
			return total, eofNil(rerr)
		}
	}
}

func eofNil(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// waitData waits until a read of c would not block, without a buffer.
func waitData(c net.Conn) error {
	switch c := c.(type) {
	case *net.TCPConn:
		return waitReadable(c)
	case *tls.Conn:
		if rc, ok := c.NetConn().(*recordConn); ok {
			if err := rc.fill(); err != nil && len(rc.buffered()) == 0 {
				return err
			}
		}
	}
	return nil
}

// readChunk reads what src has: from a tls.Conn, every record already received that fits.
func readChunk(src net.Conn, buf []byte) (int, error) {
	tc, ok := src.(*tls.Conn)
	if !ok {
		return src.Read(buf)
	}
	rc, _ := tc.NetConn().(*recordConn)
	k := 0
	for {
		n, err := tc.Read(buf[k:])
		k += n
		if err != nil || len(buf)-k < maxPlaintext || rc == nil || !rc.recordReady() {
			return k, err
		}
	}
}

// writeChunk writes b to dst; to a tls.Conn over a recordConn, its records leave in one write.
func writeChunk(dst net.Conn, b []byte) error {
	tc, ok := dst.(*tls.Conn)
	if !ok {
		_, err := dst.Write(b)
		return err
	}
	rc, ok := tc.NetConn().(*recordConn)
	if !ok {
		_, err := tc.Write(b)
		return err
	}
	rc.batch()
	_, err := tc.Write(b)
	if ferr := rc.flush(); err == nil {
		err = ferr
	}
	return err
}

// recordConn is the TCP connection under a tls.Conn of the data path. Reads hand the tls.Conn
// one record at most, from a pooled buffer filled with one read of everything that has arrived;
// so the copy knows, without blocking, whether the next record is already here. Writes made
// between batch and flush are gathered and sent in one write.
type recordConn struct {
	net.Conn // the *net.TCPConn below; only net.Conn's methods are promoted
	tcp      *net.TCPConn

	rbuf *[]byte // nil when empty
	r, w int     // unread bytes: (*rbuf)[r:w]
	left int     // bytes of the current record not handed out yet

	wmu      sync.Mutex
	wbuf     *[]byte
	wn       int
	batching bool
}

// newRecordConn wraps c for a tls.Conn of the data path; a connection that is not TCP is used
// as it is.
func newRecordConn(c net.Conn) net.Conn {
	if tc, ok := c.(*net.TCPConn); ok {
		return &recordConn{Conn: tc, tcp: tc}
	}
	return c
}

// need reports whether the tls.Conn cannot be handed a byte: within a record, none is buffered;
// between records, less than a header.
func (c *recordConn) need() bool {
	if c.left > 0 {
		return c.r == c.w
	}
	return c.w-c.r < recordHeaderLen
}

// fill waits until the tls.Conn can be handed bytes (or an error), with one read of everything
// that has arrived.
func (c *recordConn) fill() error {
	for c.need() {
		if err := waitReadable(c.tcp); err != nil {
			return err
		}
		if c.rbuf == nil {
			c.rbuf, c.r, c.w = bufPool.Get().(*[]byte), 0, 0
		} else if c.r > 0 {
			c.w = copy(*c.rbuf, (*c.rbuf)[c.r:c.w])
			c.r = 0
		}
		n, err := c.tcp.Read((*c.rbuf)[c.w:])
		c.w += n
		if err != nil {
			if c.r == c.w {
				c.release()
			}
			return err
		}
	}
	return nil
}

func (c *recordConn) release() {
	if c.rbuf != nil {
		bufPool.Put(c.rbuf)
		c.rbuf, c.r, c.w = nil, 0, 0
	}
}

// recordReady reports whether a whole record is buffered: a read of the tls.Conn returns
// without a system call.
func (c *recordConn) recordReady() bool {
	if c.left > 0 {
		return c.w-c.r >= c.left
	}
	b := c.buffered()
	return len(b) >= recordHeaderLen && len(b) >= recordHeaderLen+int(binary.BigEndian.Uint16(b[3:5]))
}

func (c *recordConn) buffered() []byte {
	if c.rbuf == nil {
		return nil
	}
	return (*c.rbuf)[c.r:c.w]
}

// Read hands out buffered bytes up to the end of the current record.
func (c *recordConn) Read(p []byte) (int, error) {
	if c.need() {
		if err := c.fill(); err != nil && c.r == c.w {
			return 0, err
		}
	}
	b := c.buffered()
	if c.left == 0 {
		if len(b) < recordHeaderLen {
			// The connection ended inside a header: hand out what is left.
			n := copy(p, b)
			c.r += n
			return n, nil
		}
		c.left = recordHeaderLen + int(binary.BigEndian.Uint16(b[3:5]))
	}
	n := copy(p, b[:min(len(b), c.left)])
	c.r += n
	c.left -= n
	if c.r == c.w {
		c.release()
	}
	return n, nil
}

// batch starts gathering writes.
func (c *recordConn) batch() {
	c.wmu.Lock()
	c.batching = true
	c.wmu.Unlock()
}

// flush sends what was gathered since batch and stops gathering.
func (c *recordConn) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.batching = false
	if c.wbuf == nil {
		return nil
	}
	_, err := c.tcp.Write((*c.wbuf)[:c.wn])
	bufPool.Put(c.wbuf)
	c.wbuf, c.wn = nil, 0
	return err
}

// Write gathers p while batching (sending what was gathered first when p does not fit), and
// writes it through otherwise.
func (c *recordConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.batching {
		return c.tcp.Write(p)
	}
	if c.wbuf == nil {
		c.wbuf, c.wn = bufPool.Get().(*[]byte), 0
	}
	if c.wn+len(p) > len(*c.wbuf) {
		if _, err := c.tcp.Write((*c.wbuf)[:c.wn]); err != nil {
			return 0, err
		}
		c.wn = 0
		if len(p) > len(*c.wbuf) {
			return c.tcp.Write(p)
		}
	}
	c.wn += copy((*c.wbuf)[c.wn:], p)
	return len(p), nil
}
