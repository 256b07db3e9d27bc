package deployments

import (
	"strings"
	"testing"

	"github.com/previewd/previewd/config"
)

// TestSecretTemplateIsRefused: the Secret manifests are templates, and
// previewd refuses their token placeholders at start-up (naming the
// variable, never quoting the value), so applying them unchanged cannot open
// the API with a token anyone can read in this repository.
func TestSecretTemplateIsRefused(t *testing.T) {
	data := map[string]any{}
	for name, obj := range k8sObjects(t) {
		if strings.HasPrefix(name, "Secret/") {
			for k, v := range dig(obj, "stringData").(map[string]any) {
				data[k] = v
			}
		}
	}
	checked := 0
	for _, env := range []string{"PREVIEWD_API_TOKENS", "PREVIEWD_DASHBOARD_READONLY_TOKENS", "PREVIEWD_METRICS_TOKEN", "PREVIEWD_CSM_WEBHOOK_TOKEN"} {
		v, _ := data[env].(string)
		if v == "" {
			continue
		}
		checked++
		_, err := config.FromEnv(func(k string) string {
			if k == env {
				return v
			}
			return ""
		})
		if err == nil || !strings.Contains(err.Error(), env) {
			t.Errorf("the Secret's %s placeholder is accepted as a token (err %v)", env, err)
		} else if strings.Contains(err.Error(), v) {
			t.Errorf("the error quotes the token: %v", err)
		}
	}
	if checked == 0 {
		t.Fatal("the Secret sets no token")
	}
}
