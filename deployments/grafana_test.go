package deployments

import (
	"encoding/json"
	"os"
	"path"
	"slices"
	"strings"
	"testing"
)

// datasourceRefs returns every "datasource" value anywhere in v, by where
// it sits.
func datasourceRefs(v any, at string, out map[string]any) {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			if k == "datasource" {
				out[at+"."+k] = child
			}
			datasourceRefs(child, at+"."+k, out)
		}
	case []any:
		for i, child := range v {
			datasourceRefs(child, at+"["+jsonNumber(i)+"]", out)
		}
	}
}

// TestGrafanaDashboardImportsAnywhere: the dashboard names no datasource
// of ours. Imported (Dashboards > Import), __inputs asks for a Prometheus
// and every panel and query takes it through ${DS_PROMETHEUS}; provisioned
// (compose's Grafana), the datasource variable of the same name resolves
// it to the default Prometheus. Every panel has a unit, and the stuck-job
// gauges have their panels.
func TestGrafanaDashboardImportsAnywhere(t *testing.T) {
	raw, err := os.ReadFile("grafana/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	var input map[string]any
	inputs, _ := dash["__inputs"].([]any)
	for _, in := range inputs {
		if m, _ := in.(map[string]any); m["name"] == "DS_PROMETHEUS" {
			input = m
		}
	}
	if input["type"] != "datasource" || input["pluginId"] != "prometheus" {
		t.Fatalf("__inputs lacks the DS_PROMETHEUS datasource input: %v", dash["__inputs"])
	}
	var variable map[string]any
	variables, _ := dig(dash, "templating", "list").([]any)
	for _, v := range variables {
		if m, _ := v.(map[string]any); m["name"] == "DS_PROMETHEUS" {
			variable = m
		}
	}
	if variable["type"] != "datasource" || variable["query"] != "prometheus" {
		t.Fatalf("no datasource variable DS_PROMETHEUS for provisioning: %v", dig(dash, "templating"))
	}

	refs := map[string]any{}
	datasourceRefs(dash, "", refs)
	panels := dash["panels"].([]any)
	if len(refs) < 2*len(panels) {
		t.Fatalf("%d datasource references for %d panels: panels or queries without one", len(refs), len(panels))
	}
	for at, ref := range refs {
		m, _ := ref.(map[string]any)
		if m["uid"] != "${DS_PROMETHEUS}" || m["type"] != "prometheus" {
			t.Errorf("%s is %v, not the ${DS_PROMETHEUS} input", at, ref)
		}
	}

	ids := map[any]bool{}
	units := map[string]string{} // metric queried -> unit of its panel
	for _, p := range panels {
		p := p.(map[string]any)
		title, _ := p["title"].(string)
		if ids[p["id"]] {
			t.Errorf("panel id %v is used twice", p["id"])
		}
		ids[p["id"]] = true
		unit, _ := dig(p, "fieldConfig", "defaults", "unit").(string)
		if unit == "" {
			t.Errorf("panel %q has no unit", title)
		}
		targets, _ := p["targets"].([]any)
		if len(targets) == 0 {
			t.Errorf("panel %q has no query", title)
		}
		for _, q := range targets {
			expr, _ := q.(map[string]any)["expr"].(string)
			for _, m := range metricPattern.FindAllString(expr, -1) {
				units[m] = unit
			}
		}
	}
	for metric, unit := range map[string]string{
		"previewd_jobs_in_flight":               "short",
		"previewd_job_oldest_in_flight_seconds": "s",
	} {
		if got, ok := units[metric]; !ok || got != unit {
			t.Errorf("no panel shows %s in unit %s (found %q)", metric, unit, got)
		}
	}
}

// TestGrafanaProvisioning: compose's Grafana loads the dashboard from
// where the provider looks, and has a Prometheus datasource for the
// DS_PROMETHEUS variable to find.
func TestGrafanaProvisioning(t *testing.T) {
	provider := dig(yamlDocs(t, "grafana/provisioning/dashboards/previewd.yml")[0], "providers").([]any)[0]
	dir := dig(provider, "options", "path").(string)
	grafana := dig(yamlDocs(t, "docker-compose.yml")[0], "services", "grafana").(map[string]any)
	var mounted, provisioning bool
	for _, v := range grafana["volumes"].([]any) {
		parts := strings.Split(v.(string), ":")
		if parts[0] == "./grafana/dashboard.json" && path.Dir(parts[1]) == dir {
			mounted = true
		}
		if parts[0] == "./grafana/provisioning" && parts[1] == "/etc/grafana/provisioning" {
			provisioning = true
		}
	}
	if !mounted || !provisioning {
		t.Errorf("compose's Grafana does not mount the provisioning and the dashboard into %s: %v", dir, grafana["volumes"])
	}
	var types []string
	for _, ds := range dig(yamlDocs(t, "grafana/provisioning/datasources/prometheus.yml")[0], "datasources").([]any) {
		types = append(types, ds.(map[string]any)["type"].(string))
	}
	if !slices.Contains(types, "prometheus") {
		t.Errorf("no Prometheus datasource is provisioned: %v", types)
	}
}
