package config_test

import (
	"os"
	"regexp"
	"testing"

	"github.com/previewd/previewd/config"
)

// TestReadmeListsEverySetting keeps the README's configuration table in
// step with the settings table: every variable, its flag and its default.
func TestReadmeListsEverySetting(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := regexp.MustCompile("(?m)^\\| `(PREVIEWD_[A-Z_]+)` \\[`--([a-z-]+)`\\] \\| (?:`([^`]*)` )?\\|").FindAllSubmatch(readme, -1)
	documented := map[string][2]string{}
	for _, r := range rows {
		documented[string(r[1])] = [2]string{string(r[2]), string(r[3])}
	}
	for _, e := range config.Default().Entries() {
		doc, ok := documented[e.Env]
		if !ok {
			t.Errorf("README's configuration table lacks %s", e.Env)
			continue
		}
		if doc[0] != e.Flag || doc[1] != e.Default {
			t.Errorf("README documents %s as --%s default %q; it is --%s default %q", e.Env, doc[0], doc[1], e.Flag, e.Default)
		}
		delete(documented, e.Env)
	}
	for env := range documented {
		t.Errorf("README documents %s, which is not a setting", env)
	}
}
