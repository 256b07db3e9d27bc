package webhook

import "net"

// SetDialResolver makes s resolve names with r when dialling, so tests can
// simulate DNS rebinding without a real DNS server. Call before first use.
func SetDialResolver(s *Sender, r *net.Resolver) { s.dialer.Resolver = r }
