// Package deployments holds previewd's deployment files; its tests check
// them for real where no Docker engine or cluster is at hand: every file
// parses, every setting named is a real setting, commands are real
// subcommands, ports and probe paths match the server, promtool accepts the
// Prometheus files, and dashboards and alerts query metrics that exist.
package deployments

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/previewd/previewd/config"
	"github.com/previewd/previewd/metrics"
)

// files returns the deployment files with one of the extensions.
func files(t *testing.T, exts ...string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && slices.Contains(exts, filepath.Ext(path)) {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// yamlDocs parses every document of a YAML file.
func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

func TestEveryFileParses(t *testing.T) {
	yamls := files(t, ".yml", ".yaml")
	jsons := files(t, ".json")
	if len(yamls) < 10 || len(jsons) < 1 {
		t.Fatalf("found %d YAML and %d JSON files; the deployment files are missing", len(yamls), len(jsons))
	}
	for _, p := range yamls {
		if len(yamlDocs(t, p)) == 0 {
			t.Errorf("%s holds no document", p)
		}
	}
	for _, p := range jsons {
		raw, _ := os.ReadFile(p)
		if !json.Valid(raw) {
			t.Errorf("%s is not valid JSON", p)
		}
	}
}

var settingPattern = regexp.MustCompile(`PREVIEWD_[A-Z0-9_]+`)

// TestSettingsAreReal: every PREVIEWD_* variable a deployment file sets or
// mentions is a setting previewd reads.
func TestSettingsAreReal(t *testing.T) {
	known := config.EnvNames()
	for _, p := range files(t, ".yml", ".yaml", ".json", "") {
		raw, _ := os.ReadFile(p)
		for _, name := range settingPattern.FindAllString(string(raw), -1) {
			if !slices.Contains(known, name) {
				t.Errorf("%s names %s, which is not a previewd setting", p, name)
			}
		}
	}
}

var (
	buildOnce sync.Once
	buildDir  string
	buildOut  []byte
	buildErr  error
)

// subcommands builds previewd (once per test run) and reads its command
// list from its usage.
func subcommands(t *testing.T) []string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "previewd-deployments-")
		if buildErr == nil {
			buildOut, buildErr = exec.Command("go", "build", "-o", filepath.Join(buildDir, "previewd"), "../cmd/previewd").CombinedOutput()
		}
	})
	if buildErr != nil {
		t.Fatalf("go build: %v\n%s", buildErr, buildOut)
	}
	out, _ := exec.Command(filepath.Join(buildDir, "previewd"), "help").CombinedOutput()
	var cmds []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(line, "  ") {
			cmds = append(cmds, f[0])
		}
	}
	if !slices.Contains(cmds, "worker") || !slices.Contains(cmds, "serve") {
		t.Fatalf("could not read the command list from:\n%s", out)
	}
	return cmds
}

// TestMain removes the binary subcommands built.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return port
}

func TestCompose(t *testing.T) {
	cmds := subcommands(t)
	compose := yamlDocs(t, "docker-compose.yml")[0]
	services := compose["services"].(map[string]any)
	for _, name := range []string{"redis", "api", "worker", "prometheus", "grafana"} {
		if services[name] == nil {
			t.Fatalf("compose lacks the %s service", name)
		}
	}
	ports := map[string]string{}
	for _, name := range []string{"api", "worker"} {
		svc := services[name].(map[string]any)
		if svc["image"] != "previewd:local" || svc["build"] == nil {
			t.Errorf("%s does not build previewd's image", name)
		}
		command := svc["command"].([]any)
		if !slices.Contains(cmds, command[0].(string)) {
			t.Errorf("%s runs `previewd %v`, not a previewd command", name, command[0])
		}
		env := svc["environment"].(map[string]any)
		ports[name] = portOf(t, env["PREVIEWD_HTTP_ADDR"].(string))
		if !strings.HasPrefix(env["PREVIEWD_REDIS_URL"].(string), "redis://redis:6379") {
			t.Errorf("%s does not use the compose Redis", name)
		}
		if svc["read_only"] != true {
			t.Errorf("%s's filesystem is writable", name)
		}
	}
	if published := services["api"].(map[string]any)["ports"].([]any)[0].(string); !strings.HasSuffix(published, ":"+ports["api"]) {
		t.Errorf("the api publishes %s but listens on %s", published, ports["api"])
	}
	// Prometheus scrapes both where they listen.
	prom := yamlDocs(t, "prometheus/prometheus.yml")[0]
	raw, _ := json.Marshal(prom["scrape_configs"])
	for name, port := range ports {
		if !strings.Contains(string(raw), name+":"+port) && !strings.Contains(string(raw), `"port":`+port) {
			t.Errorf("prometheus does not scrape %s on port %s: %s", name, port, raw)
		}
	}
}

// k8sObjects returns every Kubernetes object by kind/name.
func k8sObjects(t *testing.T) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, p := range files(t, ".yaml") {
		if !strings.HasPrefix(p, "k8s/") {
			continue
		}
		for _, doc := range yamlDocs(t, p) {
			meta, _ := doc["metadata"].(map[string]any)
			name, _ := meta["name"].(string)
			out[doc["kind"].(string)+"/"+name] = doc
		}
	}
	return out
}

func dig(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func TestKubernetes(t *testing.T) {
	cmds := subcommands(t)
	objs := k8sObjects(t)
	for _, want := range []string{
		"Deployment/previewd-worker", "Deployment/previewd-api", "Service/previewd-api",
		"PodDisruptionBudget/previewd-worker", "PodDisruptionBudget/previewd-api", "ConfigMap/previewd",
		"Secret/previewd-api", "Secret/previewd-worker",
	} {
		if objs[want] == nil {
			t.Fatalf("k8s/ lacks %s", want)
		}
	}
	for secret, keys := range map[string][]string{
		"previewd-api":    {"PREVIEWD_API_TOKENS", "PREVIEWD_REDIS_URL"},
		"previewd-worker": {"PREVIEWD_CSM_API_KEY", "PREVIEWD_WEBHOOK_SECRET", "PREVIEWD_REDIS_URL"},
	} {
		secretKeys := dig(objs["Secret/"+secret], "stringData").(map[string]any)
		for _, k := range keys {
			if _, ok := secretKeys[k]; !ok {
				t.Errorf("the Secret %s lacks %s", secret, k)
			}
		}
	}
	for key := range dig(objs["ConfigMap/previewd"], "data").(map[string]any) {
		if strings.Contains(key, "KEY") || strings.Contains(key, "SECRET") || strings.Contains(key, "TOKEN") {
			t.Errorf("the ConfigMap holds %s, a secret", key)
		}
	}
	containerPort := map[string]string{}
	for _, name := range []string{"previewd-worker", "previewd-api"} {
		dep := objs["Deployment/"+name]
		spec := dig(dep, "spec", "template", "spec").(map[string]any)
		if dig(spec, "securityContext", "runAsNonRoot") != true {
			t.Errorf("%s may run as root", name)
		}
		c := spec["containers"].([]any)[0].(map[string]any)
		if !slices.Contains(cmds, c["args"].([]any)[0].(string)) {
			t.Errorf("%s runs `previewd %v`, not a previewd command", name, c["args"])
		}
		if dig(c, "securityContext", "readOnlyRootFilesystem") != true || dig(c, "securityContext", "allowPrivilegeEscalation") != false {
			t.Errorf("%s's container is not read-only and unprivileged", name)
		}
		if dig(c, "resources", "requests", "cpu") == nil || dig(c, "resources", "requests", "memory") == nil {
			t.Errorf("%s requests no resources", name)
		}
		var froms []string
		for _, f := range c["envFrom"].([]any) {
			for kind, ref := range f.(map[string]any) {
				froms = append(froms, kind+"/"+ref.(map[string]any)["name"].(string))
			}
		}
		if !slices.Contains(froms, "secretRef/"+name) || !slices.Contains(froms, "configMapRef/previewd") {
			t.Errorf("%s does not take its settings from the Secret and the ConfigMap: %v", name, froms)
		}
		var addr string
		for _, e := range c["env"].([]any) {
			if e.(map[string]any)["name"] == "PREVIEWD_HTTP_ADDR" {
				addr = e.(map[string]any)["value"].(string)
			}
		}
		port := c["ports"].([]any)[0].(map[string]any)
		if portOf(t, addr) != jsonNumber(port["containerPort"]) {
			t.Errorf("%s listens on %s but declares port %v", name, addr, port["containerPort"])
		}
		containerPort[name] = port["name"].(string)
		for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
			if dig(c, probe, "httpGet", "path") != path || dig(c, probe, "httpGet", "port") != port["name"] {
				t.Errorf("%s's %s is not GET %s on its port", name, probe, path)
			}
		}
		labels := dig(dep, "spec", "template", "metadata", "labels").(map[string]any)
		pdb := dig(objs["PodDisruptionBudget/"+name], "spec", "selector", "matchLabels").(map[string]any)
		for k, v := range pdb {
			if labels[k] != v {
				t.Errorf("the PodDisruptionBudget of %s selects no pod of it", name)
			}
		}
	}
	svcPort := dig(objs["Service/previewd-api"], "spec", "ports").([]any)[0].(map[string]any)
	if svcPort["targetPort"] != containerPort["previewd-api"] {
		t.Errorf("the Service targets %v, the API's port is %s", svcPort["targetPort"], containerPort["previewd-api"])
	}
}

func jsonNumber(v any) string {
	raw, _ := json.Marshal(v)
	return string(raw)
}

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and no promtool (.ci/run installs Debian's prometheus package)")
		}
		t.Skip("no promtool (apt-get install prometheus)")
	}
	return p
}

func TestPrometheusFiles(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", "prometheus/alerts.yml"},
		{"check", "config", "--syntax-only", "prometheus/prometheus.yml"},
		// The rules' unit tests: the stuck-job and backlog-age alerts fire
		// when they should and stay quiet under normal load.
		{"test", "rules", "prometheus/alerts_test.yml"},
	} {
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}

var metricPattern = regexp.MustCompile(`previewd_[a-z_]+`)

// TestQueriesUseRealMetrics: alert rules and dashboard panels query only
// metrics previewd exports.
func TestQueriesUseRealMetrics(t *testing.T) {
	known := metrics.Names()
	for _, p := range []string{"prometheus/alerts.yml", "grafana/dashboard.json"} {
		raw, _ := os.ReadFile(p)
		found := metricPattern.FindAllString(string(raw), -1)
		if len(found) == 0 {
			t.Errorf("%s queries no previewd metric", p)
		}
		for _, m := range found {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
			if !slices.Contains(known, base) {
				t.Errorf("%s queries %s, which previewd does not export", p, m)
			}
		}
	}
}

func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(raw)
	for _, want := range []string{
		"AS build", "CGO_ENABLED=0", "./cmd/previewd", // a static binary from a build stage
		"FROM gcr.io/distroless/static", // no shell, no package manager
		"USER 65532:65532",              // non-root
		"EXPOSE 8080 9090",
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if strings.Count(df, "\nFROM ") != 2 || !strings.HasPrefix(strings.TrimSpace(df[strings.Index(df, "FROM"):]), "FROM golang:") {
		t.Error("Dockerfile is not a two-stage build from the Go image")
	}
	if strings.Contains(df, "/bin/sh") || strings.Contains(df, "CMD [\"sh\"") {
		t.Error("the runtime image must not need a shell")
	}
}
