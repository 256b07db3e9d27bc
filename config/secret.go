package config

import (
	"errors"
	"net/url"
	"strings"
)

// Secret is a setting that must never be printed: fmt, zap and JSON all see
// "[redacted]". Call Reveal where the raw value is really needed.
type Secret string

const redacted = "[redacted]"

// Reveal returns the raw secret.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer without revealing the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString keeps %#v from printing the secret.
func (s Secret) GoString() string { return `config.Secret("` + s.String() + `")` }

// MarshalText keeps JSON and text encoders from printing the secret.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// RedisURL is the Redis URL setting. It prints with its password hidden.
type RedisURL string

// Reveal returns the URL with its password, for connecting.
func (u RedisURL) Reveal() string { return string(u) }

// String returns the URL with any password replaced by "xxxxx".
func (u RedisURL) String() string {
	parsed, err := url.Parse(string(u))
	if err != nil {
		return "[unparseable URL]"
	}
	return parsed.Redacted()
}

// GoString keeps %#v from printing the password.
func (u RedisURL) GoString() string { return `config.RedisURL("` + u.String() + `")` }

// MarshalText keeps JSON and text encoders from printing the password.
func (u RedisURL) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// scrub returns the text of a parse error without the URL it quotes.
func (u RedisURL) scrub(err error) string {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	msg := err.Error()
	if parsed, perr := url.Parse(string(u)); perr == nil {
		if pw, ok := parsed.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return strings.ReplaceAll(msg, string(u), u.String())
}
