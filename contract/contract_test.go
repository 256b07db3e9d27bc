package contract_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/previewd/previewd/api"
)

// toolEnv quiets the tools' network habits: no telemetry, no update checks.
var toolEnv = []string{
	"REDOCLY_TELEMETRY=off", "REDOCLY_SUPPRESS_UPDATE_NOTICE=true",
	"NO_UPDATE_NOTIFIER=1", "npm_config_update_notifier=false", "npm_config_fund=false", "npm_config_audit=false",
}

// requireNode returns the paths of node and npm. Without them the test
// fails under CI=true (the contract must be checked there) and skips,
// saying why, elsewhere.
func requireNode(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("CI=true and %s is not installed: the OpenAPI contract cannot be checked", tool)
			}
			t.Skipf("%s is not installed: skipping the OpenAPI contract checks (they fail under CI=true)", tool)
		}
	}
}

func run(ctx context.Context, dir string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), toolEnv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w\n%s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out, nil
}

var install struct {
	once sync.Once
	err  error
}

// installed runs npm ci in this directory when node_modules is missing or
// older than package-lock.json, once per test binary.
func installed(t *testing.T) {
	t.Helper()
	requireNode(t)
	install.once.Do(func() {
		lock, err := os.Stat("package-lock.json")
		if err != nil {
			install.err = err
			return
		}
		if have, err := os.Stat(filepath.Join("node_modules", ".package-lock.json")); err == nil && !have.ModTime().Before(lock.ModTime()) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		_, install.err = run(ctx, ".", "npm", "ci", "--no-audit", "--no-fund")
	})
	if install.err != nil {
		t.Fatalf("npm ci: %v", install.err)
	}
}

func bin(name string) string {
	abs, _ := filepath.Abs(filepath.Join("node_modules", ".bin", name))
	return abs
}

// TestRedoclyRecommended lints the document with Redocly's recommended
// rules and fails on any error or warning. The only exceptions are the
// ones .redocly.lint-ignore.yaml lists, with its reasons.
func TestRedoclyRecommended(t *testing.T) {
	t.Parallel()
	installed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := run(ctx, ".", bin("redocly"), "lint", "--extends", "recommended", "--format", "json", "../api/openapi.json")
	// lint exits 1 on errors; the report says what they are either way.
	var report struct {
		Totals struct {
			Errors, Warnings, Ignored int
		} `json:"totals"`
		Problems []struct {
			RuleID   string `json:"ruleId"`
			Severity string `json:"severity"`
			Message  string `json:"message"`
			Location []struct {
				Pointer string `json:"pointer"`
			} `json:"location"`
		} `json:"problems"`
	}
	if jerr := json.Unmarshal(out, &report); jerr != nil {
		t.Fatalf("redocly lint gave no JSON report (%v); %v", jerr, err)
	}
	for _, p := range report.Problems {
		where := ""
		if len(p.Location) > 0 {
			where = p.Location[0].Pointer
		}
		t.Errorf("%s %s at %s: %s", p.Severity, p.RuleID, where, p.Message)
	}
	if report.Totals.Errors+report.Totals.Warnings > 0 || err != nil {
		t.Fatalf("redocly lint --extends recommended: %d errors, %d warnings (%v)", report.Totals.Errors, report.Totals.Warnings, err)
	}
	t.Logf("redocly lint --extends recommended: no problems, %d ignored by .redocly.lint-ignore.yaml", report.Totals.Ignored)
}

var build struct {
	once sync.Once
	dir  string
	err  error
}

// compiled generates the types from the document the API serves with
// openapi-typescript (default options, as an integrator runs it), compiles
// src/ against them with tsc under tsconfig.json (strict), once per test
// binary, and returns the directory holding out/*.js.
func compiled(t *testing.T) string {
	t.Helper()
	installed(t)
	build.once.Do(func() { build.dir, build.err = compile() })
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.dir
}

func compile() (string, error) {
	dir, err := os.MkdirTemp("", "previewd-contract-")
	if err != nil {
		return "", err
	}
	buildDirs = append(buildDirs, dir)
	here, err := os.Getwd()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(dir, "src"), 0o755); err != nil {
		return "", err
	}
	files := map[string][]byte{
		"openapi.json": api.OpenAPIDocument(),
		"package.json": []byte(`{"type": "module"}` + "\n"),
	}
	if files["tsconfig.json"], err = os.ReadFile("tsconfig.json"); err != nil {
		return "", err
	}
	sources, err := filepath.Glob(filepath.Join("src", "*.ts"))
	if err != nil || len(sources) == 0 {
		return "", fmt.Errorf("no TypeScript sources in src/ (%v)", err)
	}
	for _, src := range sources {
		if filepath.Base(src) == "schema.d.ts" {
			continue // a local npm run gen leaves one; the test generates its own
		}
		if files[src], err = os.ReadFile(src); err != nil {
			return "", err
		}
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return "", err
		}
	}
	if err := os.Symlink(filepath.Join(here, "node_modules"), filepath.Join(dir, "node_modules")); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if _, err := run(ctx, dir, bin("openapi-typescript"), "openapi.json", "-o", filepath.Join("src", "schema.d.ts")); err != nil {
		return "", err
	}
	if _, err := run(ctx, dir, bin("tsc"), "-p", "."); err != nil {
		return "", fmt.Errorf("the client and the webhook handler do not compile against the generated types: %w", err)
	}
	return dir, nil
}

var buildDirs []string

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range buildDirs {
		_ = os.RemoveAll(d)
	}
	os.Exit(code)
}
