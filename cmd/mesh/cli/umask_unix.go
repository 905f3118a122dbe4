//go:build unix

package cli

import "syscall"

// restrictUmask makes the files and directories mesh serve creates owner-only.
func restrictUmask() { syscall.Umask(0o077) }
