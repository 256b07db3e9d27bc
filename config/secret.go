package config

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
