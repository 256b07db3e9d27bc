package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The constructors below build the settings table: each binds a flag name to
// one Config field, so parsing, printing and validation share one source.

func stringSetting(name, def, usage string, field func(*Config) *string) setting {
	return setting{flag: name, def: def, usage: usage,
		apply: func(c *Config, v string) error { *field(c) = v; return nil },
		get:   func(c Config) string { return *field(&c) },
	}
}

func secretSetting(name, usage string, field func(*Config) *Secret) setting {
	return setting{flag: name, usage: usage, secret: true,
		apply: func(c *Config, v string) error { *field(c) = Secret(v); return nil },
		get:   func(c Config) string { return field(&c).String() },
	}
}

func durationSetting(name, def, usage string, field func(*Config) *time.Duration) setting {
	return setting{flag: name, def: def, usage: usage,
		apply: func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("not a duration (like 30s, 5m, 3h): %q", v)
			}
			*field(c) = d
			return nil
		},
		get: func(c Config) string { return field(&c).String() },
	}
}

func intSetting(name, def, usage string, field func(*Config) *int) setting {
	return setting{flag: name, def: def, usage: usage,
		apply: func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("not an integer: %q", v)
			}
			*field(c) = n
			return nil
		},
		get: func(c Config) string { return strconv.Itoa(*field(&c)) },
	}
}

func boolSetting(name, def, usage string, field func(*Config) *bool) setting {
	return setting{flag: name, def: def, usage: usage, isBool: true,
		apply: func(c *Config, v string) error {
			b, err := strconv.ParseBool(strings.ToLower(v))
			if err != nil {
				return fmt.Errorf("not a boolean (true or false): %q", v)
			}
			*field(c) = b
			return nil
		},
		get: func(c Config) string { return strconv.FormatBool(*field(&c)) },
	}
}

func durationListSetting(name, def, usage string, field func(*Config) *[]time.Duration) setting {
	return setting{flag: name, def: def, usage: usage,
		apply: func(c *Config, v string) error {
			var out []time.Duration
			for _, part := range splitList(v) {
				d, err := time.ParseDuration(part)
				if err != nil {
					return fmt.Errorf("not a list of durations (like 5s,5m,2h): %q", part)
				}
				out = append(out, d)
			}
			*field(c) = out
			return nil
		},
		get: func(c Config) string {
			parts := make([]string, len(*field(&c)))
			for i, d := range *field(&c) {
				parts[i] = d.String()
			}
			return strings.Join(parts, ",")
		},
	}
}

// splitList splits a list setting at commas and spaces, dropping empty
// entries.
func splitList(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })
}

func listSetting(name, def, usage string, field func(*Config) *[]string) setting {
	return setting{flag: name, def: def, usage: usage,
		apply: func(c *Config, v string) error { *field(c) = splitList(v); return nil },
		get:   func(c Config) string { return strings.Join(*field(&c), ",") },
	}
}
