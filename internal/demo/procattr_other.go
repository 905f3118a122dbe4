//go:build !linux

package main

import "syscall"

// childAttr: only Linux can tie a child's life to its parent's; elsewhere the demo's own
// cleanup stops the children.
func childAttr() *syscall.SysProcAttr { return nil }
