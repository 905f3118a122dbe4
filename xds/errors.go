package xds

import "errors"

// Sentinel errors, matched with errors.Is.
var (
	// ErrUnknownService means a node names (in node.cluster) a service the snapshot does not have.
	ErrUnknownService = errors.New("unknown service")
	// ErrBadNode means a node is missing its id or cluster, or has an invalid shape override.
	ErrBadNode = errors.New("bad xDS node")
	// ErrInconsistent means rendered resources do not reference each other completely; it is a bug
	// in rendering or an invalid snapshot, and the snapshot is not served.
	ErrInconsistent = errors.New("inconsistent xDS resources")
	// ErrInvalidResource means a rendered resource fails Envoy's validation rules.
	ErrInvalidResource = errors.New("invalid xDS resource")
	// ErrBadBundle means a trust bundle is not a list of PEM CA certificates.
	ErrBadBundle = errors.New("bad trust bundle")
	// ErrClosed means the server is closed.
	ErrClosed = errors.New("xds server closed")
	// ErrUnknownNode means ProxyConfig was asked about a node that is not connected.
	ErrUnknownNode = errors.New("no such proxy connected")
	// ErrKeyMaterial means a secret to be shown carries a private key inline; rendering never
	// makes one, so ProxyConfig refuses rather than show it.
	ErrKeyMaterial = errors.New("a secret carries key material inline; refusing to show it")
)
