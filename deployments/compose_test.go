package deployments

import (
	"bufio"
	"bytes"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pb33f/jsonschema/v6"
	k8syaml "sigs.k8s.io/yaml"
)

// entrypoint is the binary's path in the image, from the Dockerfile.
func entrypoint(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ENTRYPOINT \["([^"]+)"\]`).FindStringSubmatch(string(raw))
	if m == nil {
		t.Fatal("the Dockerfile has no exec-form ENTRYPOINT")
	}
	return m[1]
}

// TestComposePortable: the compose file uses only top-level keys every
// Compose v2 reads (no `version:`, no `name:`), and each previewd service
// has a healthcheck that runs in distroless: exec form, the image's own
// binary, `previewd healthcheck --url` on the service's own port and
// /healthz, with no option a recent engine alone knows.
func TestComposePortable(t *testing.T) {
	compose := yamlDocs(t, "docker-compose.yml")[0]
	for key := range compose {
		if !slices.Contains([]string{"services", "volumes", "networks", "configs", "secrets"}, key) && !strings.HasPrefix(key, "x-") {
			t.Errorf("top-level key %q: older Compose releases reject it", key)
		}
	}
	bin := entrypoint(t)
	services := compose["services"].(map[string]any)
	for _, name := range []string{"api", "worker"} {
		svc := services[name].(map[string]any)
		hc, _ := svc["healthcheck"].(map[string]any)
		if hc == nil {
			t.Errorf("%s has no healthcheck", name)
			continue
		}
		for key := range hc {
			if !slices.Contains([]string{"test", "interval", "timeout", "retries", "start_period", "disable"}, key) {
				t.Errorf("%s's healthcheck sets %s, which older engines or Compose reject", name, key)
			}
		}
		var test []string
		for _, a := range hc["test"].([]any) {
			test = append(test, a.(string))
		}
		if len(test) != 5 || test[0] != "CMD" || test[1] != bin || test[2] != "healthcheck" || test[3] != "--url" {
			t.Errorf("%s's healthcheck is %q, want [CMD %s healthcheck --url URL] (no shell in distroless)", name, test, bin)
			continue
		}
		u, err := url.Parse(test[4])
		port := portOf(t, svc["environment"].(map[string]any)["PREVIEWD_HTTP_ADDR"].(string))
		if err != nil || u.Scheme != "http" || u.Hostname() != "127.0.0.1" || u.Port() != port || u.Path != "/healthz" {
			t.Errorf("%s's healthcheck GETs %s; it listens on :%s and answers /healthz", name, test[4], port)
		}
	}
}

// TestComposeHealthcheckCommandExists: the healthchecks' command is a real
// subcommand of the built binary. Outside CI a binary without it skips
// (the subcommand is written beside this file's change); under CI=true it
// fails, since the compose services would never turn healthy.
func TestComposeHealthcheckCommandExists(t *testing.T) {
	if !slices.Contains(subcommands(t), "healthcheck") {
		if os.Getenv("CI") == "true" {
			t.Fatal("docker-compose.yml's healthchecks run `previewd healthcheck`, which the binary lacks")
		}
		t.Skip("previewd has no healthcheck subcommand yet; docker-compose.yml's healthchecks need it")
	}
}

// dockerignore reads the patterns of the repository's .dockerignore.
func dockerignore(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			t.Fatalf(".dockerignore: exceptions (%s) are beyond this test's matcher", line)
		}
		out = append(out, strings.TrimSuffix(strings.TrimPrefix(line, "/"), "/"))
	}
	return out
}

// ignored reports whether a pattern of .dockerignore excludes p (a path
// relative to the repository): a pattern that matches p or one of its
// parent directories, "**/" matching any number of leading directories.
func ignored(patterns []string, p string) bool {
	parts := strings.Split(p, "/")
	for _, pat := range patterns {
		anyDepth := strings.HasPrefix(pat, "**/")
		pat = strings.TrimPrefix(pat, "**/")
		for start := range parts {
			if start > 0 && !anyDepth {
				break
			}
			for end := start + 1; end <= len(parts); end++ {
				if ok, _ := path.Match(pat, strings.Join(parts[start:end], "/")); ok {
					return true
				}
			}
		}
	}
	return false
}

var embedPattern = regexp.MustCompile(`(?m)^\s*//go:embed (.+)$`)

// TestDockerignore: the build context leaves out history, local secrets
// and leftovers, and keeps what the image's build reads: go.mod, go.sum,
// every Go source file and every file a go:embed names.
func TestDockerignore(t *testing.T) {
	patterns := dockerignore(t)
	for _, out := range []string{".git", ".env", "deployments/.env", "previewd", "api/api.test", "ui/node_modules/x.js"} {
		if !ignored(patterns, out) {
			t.Errorf(".dockerignore lets %s into the build context", out)
		}
	}
	needed := []string{"go.mod", "go.sum"}
	err := filepath.WalkDir("..", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("..", p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == ".git" || d.Name() == "node_modules" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		needed = append(needed, rel)
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range embedPattern.FindAllStringSubmatch(string(raw), -1) {
			for _, pat := range strings.Fields(m[1]) {
				pat = strings.Trim(pat, `"`)
				pat = strings.TrimPrefix(pat, "all:")
				matches, _ := filepath.Glob(filepath.Join(filepath.Dir(p), pat))
				if len(matches) == 0 {
					t.Errorf("%s embeds %s, which matches no file", rel, pat)
				}
				for _, f := range matches {
					r, _ := filepath.Rel("..", f)
					needed = append(needed, filepath.ToSlash(r))
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(needed) < 20 {
		t.Fatalf("found only %v: the walk missed the sources", needed)
	}
	for _, p := range needed {
		if ignored(patterns, p) {
			t.Errorf(".dockerignore leaves out %s, which the build needs", p)
		}
	}
}

// TestComposeMatchesTheSpecification: docker-compose.yml is valid under the
// Compose Specification's JSON schema, which `docker compose` checks a file
// against: the current one, and the one of January 2022, before the
// top-level `name` key, which early Compose v2 releases still refuse
// (testdata/README.md says where each comes from).
func TestComposeMatchesTheSpecification(t *testing.T) {
	raw, err := os.ReadFile("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	js, err := k8syaml.YAMLToJSON(raw) // resolves the x-previewd anchors and merges
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		t.Fatal(err)
	}
	for _, schema := range []string{"testdata/compose-spec-2022-01.json", "testdata/compose-spec-2026-06.json"} {
		t.Run(filepath.Base(schema), func(t *testing.T) {
			f, err := os.Open(schema)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			spec, err := jsonschema.UnmarshalJSON(f)
			if err != nil {
				t.Fatal(err)
			}
			c := jsonschema.NewCompiler()
			if err := c.AddResource("compose_spec.json", spec); err != nil {
				t.Fatal(err)
			}
			sch, err := c.Compile("compose_spec.json")
			if err != nil {
				t.Fatal(err)
			}
			if err := sch.Validate(doc); err != nil {
				t.Errorf("docker-compose.yml is not valid Compose (%s): %#v", schema, err)
			}
			// The check itself: a key the specification lacks is refused.
			bad := map[string]any{"services": map[string]any{"api": map[string]any{"image": "x", "helthcheck": map[string]any{}}}}
			if sch.Validate(bad) == nil {
				t.Error("the schema accepts a service with a misspelt key")
			}
		})
	}
}
