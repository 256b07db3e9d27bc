package chaos

import "syscall"

// childAttr makes the kernel SIGKILL a child when the harness dies, even by
// a signal or a panic that skips its clean-up.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
