//go:build !linux

package chaos

import "syscall"

// childAttr: only Linux can tie a child's life to the harness; elsewhere the
// harness's own clean-up kills its children.
func childAttr() *syscall.SysProcAttr { return nil }
