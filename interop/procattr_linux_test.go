package interop

import "syscall"

// childAttr makes children die with the test binary, even when it is killed.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
