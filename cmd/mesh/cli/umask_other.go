//go:build !unix

package cli

// restrictUmask is a no-op where there is no umask; the data directory is still made owner-only.
func restrictUmask() {}
