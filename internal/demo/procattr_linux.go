package main

import "syscall"

// childAttr makes a child process get SIGTERM when the demo dies without stopping it (killed,
// or a test binary killed at its timeout), so no server is left holding the ports.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM} }
