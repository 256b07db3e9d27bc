package deployments

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// serviceMonitor is the part of the Prometheus Operator's ServiceMonitor
// (monitoring.coreos.com/v1) the manifest uses; decoding is strict, so a
// field the manifest sets that is not here (a typo, or a field the
// operator's CRD does not have) fails the test.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector,omitempty"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path,omitempty"`
			Interval      string `json:"interval,omitempty"`
			ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// kustomization is a kustomize Kustomization or Component, as far as these
// manifests use one.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources,omitempty"`
	Components []string `json:"components,omitempty"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
}

// manifest is one decoded document of a file under k8s/.
type manifest struct {
	file string
	obj  any
}

// newObject returns the typed object for a document's apiVersion and kind.
func newObject(apiVersion, kind string) (any, bool) {
	switch apiVersion + " " + kind {
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, true
	case "v1 Service":
		return &corev1.Service{}, true
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1 Secret":
		return &corev1.Secret{}, true
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	case "networking.k8s.io/v1 NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, true
	case "monitoring.coreos.com/v1 ServiceMonitor":
		return &serviceMonitor{}, true
	case "kustomize.config.k8s.io/v1beta1 Kustomization", "kustomize.config.k8s.io/v1alpha1 Component":
		return &kustomization{}, true
	}
	return nil, false
}

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// decodeStrict decodes JSON into obj, refusing unknown fields and
// anything after the object.
func decodeStrict(raw []byte, obj any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("data after the object")
	}
	return nil
}

// k8sManifests strictly decodes every document of every YAML file under
// k8s/ into its Kubernetes API type (a kustomization into its own).
func k8sManifests(t *testing.T) []manifest {
	t.Helper()
	var out []manifest
	for _, p := range files(t, ".yaml", ".yml") {
		if !strings.HasPrefix(p, "k8s/") {
			continue
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range docSeparator.Split(string(raw), -1) {
			js, err := yaml.YAMLToJSON([]byte(doc))
			if err != nil {
				t.Fatalf("%s document %d: %v", p, i, err)
			}
			if string(js) == "null" {
				continue // only comments
			}
			var tm metav1.TypeMeta
			if err := json.Unmarshal(js, &tm); err != nil {
				t.Fatalf("%s document %d: %v", p, i, err)
			}
			obj, ok := newObject(tm.APIVersion, tm.Kind)
			if !ok {
				t.Fatalf("%s document %d: %s %s is not a kind this test knows", p, i, tm.APIVersion, tm.Kind)
			}
			if err := decodeStrict(js, obj); err != nil {
				t.Fatalf("%s document %d (%s): %v", p, i, tm.Kind, err)
			}
			out = append(out, manifest{file: p, obj: obj})
		}
	}
	if len(out) < 10 {
		t.Fatalf("decoded only %d manifests", len(out))
	}
	return out
}

// objectsOf returns the decoded objects of type T by name.
func objectsOf[T any](ms []manifest, name func(*T) string) map[string]*T {
	out := map[string]*T{}
	for _, m := range ms {
		if o, ok := m.obj.(*T); ok {
			out[name(o)] = o
		}
	}
	return out
}

func TestStrictDecodingRefusesUnknownFields(t *testing.T) {
	// The check itself: a misspelt field is refused, not dropped.
	js, err := yaml.YAMLToJSON([]byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeStrict(js, &appsv1.Deployment{}); err == nil || !strings.Contains(err.Error(), "replica") {
		t.Fatalf("a Deployment with spec.replica decoded: %v", err)
	}
	js, _ = yaml.YAMLToJSON([]byte("apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec:\n  endpoints: [{port: http, intervall: 15s}]\n"))
	if err := decodeStrict(js, &serviceMonitor{}); err == nil {
		t.Fatal("a ServiceMonitor with endpoints[].intervall decoded")
	}
}

// podSecrets returns the Secret keys a pod template can read: whole
// Secrets through envFrom, single keys through env, and mounted volumes.
func podSecrets(t *testing.T, spec corev1.PodSpec, secrets map[string]*corev1.Secret) []string {
	t.Helper()
	var keys []string
	whole := func(name string) {
		s := secrets[name]
		if s == nil {
			t.Errorf("the pod reads Secret %s, which k8s/ does not define", name)
			return
		}
		for k := range s.StringData {
			keys = append(keys, k)
		}
		for k := range s.Data {
			keys = append(keys, k)
		}
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		for _, from := range c.EnvFrom {
			if from.SecretRef != nil {
				whole(from.SecretRef.Name)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				keys = append(keys, e.ValueFrom.SecretKeyRef.Key)
			}
			if e.Value != "" {
				keys = append(keys, e.Name) // a literal value: a secret set in plain text counts too
			}
		}
	}
	for _, v := range spec.Volumes {
		if v.Secret != nil {
			whole(v.Secret.SecretName)
		}
	}
	return keys
}

var pinnedImage = regexp.MustCompile(`^[a-z0-9.\-/]+(:v?\d+\.\d+\.\d+[0-9A-Za-z.\-]*)?(@sha256:[0-9a-f]{64})?$`)

// TestKubernetesManifestsDecodeStrictly: every manifest decodes into its
// k8s.io/api type with unknown fields refused; the API Deployment can read
// neither the CSM API key nor the webhook signing secret, while the workers
// get both; images are pinned to a version, in the manifests and in the
// kustomization; the optional parts are kustomize Components the default
// kustomization leaves out, and they select real pods and ports.
func TestKubernetesManifestsDecodeStrictly(t *testing.T) {
	ms := k8sManifests(t)
	deployments := objectsOf(ms, func(d *appsv1.Deployment) string { return d.Name })
	secrets := objectsOf(ms, func(s *corev1.Secret) string { return s.Name })
	services := objectsOf(ms, func(s *corev1.Service) string { return s.Name })
	policies := objectsOf(ms, func(p *networkingv1.NetworkPolicy) string { return p.Name })
	monitors := objectsOf(ms, func(m *serviceMonitor) string { return m.Name })
	api, worker := deployments["previewd-api"], deployments["previewd-worker"]
	if api == nil || worker == nil {
		t.Fatalf("k8s/ lacks the API or the worker Deployment: %v", slices.Sorted(maps.Keys(deployments)))
	}

	apiKeys := podSecrets(t, api.Spec.Template.Spec, secrets)
	for _, k := range []string{"PREVIEWD_CSM_API_KEY", "PREVIEWD_WEBHOOK_SECRET"} {
		if slices.Contains(apiKeys, k) {
			t.Errorf("the API Deployment can read %s; only workers use it", k)
		}
	}
	for _, k := range []string{"PREVIEWD_REDIS_URL", "PREVIEWD_API_TOKENS"} {
		if !slices.Contains(apiKeys, k) {
			t.Errorf("the API Deployment lacks %s", k)
		}
	}
	if a := api.Spec.Template.Spec.AutomountServiceAccountToken; a == nil || *a {
		t.Error("the API's pods mount a service account token they never use")
	}
	workerKeys := podSecrets(t, worker.Spec.Template.Spec, secrets)
	for _, k := range []string{"PREVIEWD_REDIS_URL", "PREVIEWD_CSM_API_KEY", "PREVIEWD_WEBHOOK_SECRET"} {
		if !slices.Contains(workerKeys, k) {
			t.Errorf("the worker Deployment lacks %s", k)
		}
	}
	if slices.Contains(workerKeys, "PREVIEWD_API_TOKENS") {
		t.Error("the worker Deployment can read the API tokens")
	}

	var tags []string
	for _, d := range deployments {
		for _, c := range append(slices.Clone(d.Spec.Template.Spec.InitContainers), d.Spec.Template.Spec.Containers...) {
			if strings.HasSuffix(c.Image, ":latest") || !strings.ContainsAny(c.Image, ":@") || !pinnedImage.MatchString(c.Image) {
				t.Errorf("%s runs image %q: pin a version (vX.Y.Z) or a digest", d.Name, c.Image)
			}
			if i := strings.LastIndex(c.Image, ":"); i > 0 {
				tags = append(tags, c.Image[i+1:])
			}
		}
	}

	var root *kustomization
	var components []string
	for _, m := range ms {
		k, ok := m.obj.(*kustomization)
		if !ok {
			continue
		}
		dir := filepath.Dir(m.file)
		for _, r := range k.Resources {
			if _, err := os.Stat(filepath.Join(dir, r)); err != nil {
				t.Errorf("%s lists %s: %v", m.file, r, err)
			}
		}
		switch {
		case m.file == "k8s/kustomization.yaml" && k.Kind == "Kustomization":
			root = k
		case k.Kind == "Component":
			components = append(components, dir)
		default:
			t.Errorf("%s is a %s; only k8s/ itself is a Kustomization, the optional parts are Components", m.file, k.Kind)
		}
	}
	if root == nil {
		t.Fatal("k8s/kustomization.yaml is not a Kustomization")
	}
	for _, r := range root.Resources {
		for _, m := range ms {
			if filepath.Join("k8s", r) != m.file {
				continue
			}
			switch m.obj.(type) {
			case *networkingv1.NetworkPolicy, *serviceMonitor:
				t.Errorf("the default kustomization applies %s; it is optional", r)
			}
		}
	}
	if len(root.Components) != 0 {
		t.Errorf("the default kustomization enables components %v; they are optional", root.Components)
	}
	for _, img := range root.Images {
		if img.Digest == "" && (img.NewTag == "" || img.NewTag == "latest" || !slices.Contains(tags, img.NewTag)) {
			t.Errorf("the kustomization sets %s to tag %q; pin the version the manifests name (%v)", img.Name, img.NewTag, tags)
		}
	}

	if len(policies) != 2 || len(monitors) != 1 || len(components) != 2 {
		t.Fatalf("want NetworkPolicies for api and worker, a ServiceMonitor, each in a Component: %d, %d, %v", len(policies), len(monitors), components)
	}
	for _, np := range policies {
		d := deployments[np.Name]
		if d == nil {
			t.Errorf("NetworkPolicy %s is named after no Deployment", np.Name)
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) || len(np.Spec.PodSelector.MatchLabels) == 0 {
			t.Errorf("NetworkPolicy %s does not select %s's pods", np.Name, d.Name)
		}
		var open []string
		for _, rule := range np.Spec.Ingress {
			for _, p := range rule.Ports {
				open = append(open, p.Port.String())
			}
		}
		for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
			if !slices.Contains(open, p.Name) && !slices.Contains(open, fmt.Sprint(p.ContainerPort)) {
				t.Errorf("NetworkPolicy %s closes %s's port %s", np.Name, d.Name, p.Name)
			}
		}
	}
	for _, sm := range monitors {
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		scraped := map[string]bool{}
		for _, svc := range services {
			if !sel.Matches(labels.Set(svc.Labels)) {
				continue
			}
			for _, ep := range sm.Spec.Endpoints {
				for _, p := range svc.Spec.Ports {
					if p.Name != ep.Port || ep.Path != "/metrics" {
						continue
					}
					for name, d := range deployments {
						if labelsSelect(svc.Spec.Selector, d.Spec.Template.Labels) && hasPort(d, p.TargetPort.String()) {
							scraped[name] = true
						}
					}
				}
			}
		}
		if !scraped["previewd-api"] || !scraped["previewd-worker"] {
			t.Errorf("ServiceMonitor %s scrapes /metrics of %v; want the API's and the workers' pods", sm.Name, scraped)
		}
	}
}

func labelsSelect(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return len(selector) > 0
}

func hasPort(d *appsv1.Deployment, name string) bool {
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name || fmt.Sprint(p.ContainerPort) == name {
				return true
			}
		}
	}
	return false
}

// TestKustomizeBuilds: kubectl's kustomize builds the default set and an
// overlay with both optional components, when kubectl is at hand.
func TestKustomizeBuilds(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("no kubectl; the manifests are checked without it by TestKubernetesManifestsDecodeStrictly")
	}
	abs, err := filepath.Abs("k8s")
	if err != nil {
		t.Fatal(err)
	}
	overlay := t.TempDir()
	base, err := filepath.Rel(overlay, abs) // kustomize takes no absolute paths
	if err != nil {
		t.Fatal(err)
	}
	kust := fmt.Sprintf("resources: [%s]\ncomponents: [%s, %s]\n", base,
		filepath.Join(base, "components/network-policy"), filepath.Join(base, "components/service-monitor"))
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(kust), 0o600); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string][]string{
		"k8s":   {"kind: Deployment", "kind: Secret"},
		overlay: {"kind: NetworkPolicy", "kind: ServiceMonitor", "name: previewd-worker-metrics"},
	} {
		out, err := exec.Command(kubectl, "kustomize", dir).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, out)
		}
		for _, w := range want {
			if !strings.Contains(string(out), w) {
				t.Errorf("kubectl kustomize %s lacks %q", dir, w)
			}
		}
		if dir == "k8s" && (strings.Contains(string(out), "NetworkPolicy") || strings.Contains(string(out), "ServiceMonitor")) {
			t.Errorf("the default build applies an optional part")
		}
		if strings.Contains(string(out), ":latest") {
			t.Errorf("kubectl kustomize %s names a :latest image", dir)
		}
	}
}
