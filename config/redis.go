package config

import (
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// validateSentinel checks the Sentinel and replica settings against each
// other and against the Redis URL.
func (c Config) validateSentinel() []error {
	var errs []error
	bad := func(flagName, format string, args ...any) {
		errs = append(errs, invalid(flagName, format, args...))
	}
	sentinels, master := lookup("redis-sentinels").env(), lookup("redis-master").env()
	switch {
	case len(c.RedisSentinels) > 0 && c.RedisMaster == "":
		bad("redis-master", "is required with %s: the name of the primary the sentinels monitor", sentinels)
	case len(c.RedisSentinels) == 0 && c.RedisMaster != "":
		bad("redis-sentinels", "is required with %s: the sentinels that know where %q is", master, c.RedisMaster)
	}
	if len(c.RedisSentinels) == 0 && c.RedisSentinelPassword != "" {
		bad("redis-sentinel-password", "is only used with %s", sentinels)
	}
	if strings.ContainsFunc(c.RedisMaster, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		bad("redis-master", "must not contain spaces or control characters")
	}
	if len(c.RedisSentinels) > 0 {
		if c.RedisCluster {
			bad("redis-sentinels", "cannot be combined with %s: Sentinel and Cluster are different deployments", lookup("redis-cluster").env())
		}
		for _, a := range c.RedisSentinels {
			if reason := checkHostPort(a); reason != "" {
				bad("redis-sentinels", "%q is not a host:port address: %s", a, reason)
			}
		}
		// The sentinels give the address; the URL still gives credentials,
		// TLS and DB, which a unix socket URL cannot carry to a TCP primary.
		if u, err := url.Parse(c.RedisURL.Reveal()); err == nil && u.Scheme != "redis" && u.Scheme != "rediss" {
			bad("redis-url", "must be redis:// or rediss:// with %s (it gives credentials, TLS and DB; the sentinels give the address)", sentinels)
		}
	}
	if c.RedisMinReplicas < 0 || c.RedisMinReplicas > 100 {
		bad("redis-min-replicas", "must be between 0 and 100")
	}
	// WAIT counts its timeout in milliseconds and waits forever on 0.
	if c.RedisReplicaTimeout < time.Millisecond || c.RedisReplicaTimeout > time.Minute {
		bad("redis-replica-timeout", "must be between 1ms and 1m (it holds a worker slot while it waits)")
	}
	return errs
}

// checkHostPort explains why a is not a host:port address, or returns "".
func checkHostPort(a string) string {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return "missing port or malformed"
	}
	if host == "" {
		return "missing host"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "port must be 1-65535"
	}
	return ""
}
