package argocd

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite argocd-cm.yaml from the .lua files")

const (
	pausedKey    = "oneinbox.ai/paused"
	reconcileKey = "oneinbox.ai/reconcile-requested-at"
)

func scripts(t *testing.T) Scripts {
	t.Helper()
	s, err := LoadScripts(ChartDir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// loadObject reads a YAML fixture into the JSON-shaped map a Kubernetes client hands Argo CD.
func loadObject(t *testing.T, path string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var y any
	if err := yaml.Unmarshal(raw, &y); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	j, err := json.Marshal(y)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var obj map[string]any
	if err := json.Unmarshal(j, &obj); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return obj
}

func fixture(t *testing.T, name string) map[string]any {
	t.Helper()
	return loadObject(t, filepath.Join("testdata", "health", name+".yaml"))
}

func annotations(obj map[string]any) map[string]any {
	md, _ := obj["metadata"].(map[string]any)
	a, _ := md["annotations"].(map[string]any)
	return a
}

// Every fixture under testdata/health with the health Argo CD must show for it.
var healthCases = []struct {
	fixture  string
	status   string
	contains string // a part of the message
}{
	{"no-status", "Progressing", "Waiting for the operator"},
	{"status-without-conditions", "Progressing", "Waiting for the operator"},
	{"observed-generation-missing", "Progressing", "observe generation 2"},
	{"generation-lagging", "Progressing", "observe generation 3 (observed: 2)"},
	{"generation-lagging-stalled", "Progressing", "observe generation 3"},
	{"creating", "Progressing", "Creating: "},
	{"updating", "Progressing", "Updating: "},
	{"provisioning", "Progressing", "Provisioning: "},
	{"api-unavailable", "Progressing", "APIUnavailable: "},
	{"secret-not-found-reconciling", "Progressing", "SecretNotFound: "},
	{"ready-unknown", "Progressing", "Creating: "},
	{"available", "Healthy", "Available: "},
	{"paused-annotation-false", "Healthy", "Available: "},
	{"stalled-registration-rejected", "Degraded", "RegistrationRejected: OneInbox rejected"},
	{"stalled-update-rejected", "Degraded", "UpdateRejected: "},
	{"stalled-registration-failed", "Degraded", "RegistrationFailed: "},
	{"stalled-already-registered", "Degraded", "AlreadyRegistered: "},
	{"stalled-duplicate-phone-number", "Degraded", "DuplicatePhoneNumber: "},
	{"stalled-secret-not-found", "Degraded", "SecretNotFound: "},
	{"stalled-id-mismatch", "Degraded", "IdMismatch: "},
	{"replacement-required", "Degraded", "ReplacementRequired: "},
	{"paused", "Suspended", "Paused: "},
	{"paused-not-yet-acknowledged", "Suspended", pausedKey},
	{"resuming", "Progressing", "Resuming"},
	{"deleting", "Progressing", "Deleting: "},
	{"deleting-not-yet-observed", "Progressing", "deletionPolicy Orphan"},
	{"deletion-blocked", "Degraded", "DeletionBlocked: "},
	{"deleting-paused", "Suspended", "Deletion is paused"},
}

func TestHealth(t *testing.T) {
	s := scripts(t)
	for _, tc := range healthCases {
		t.Run(tc.fixture, func(t *testing.T) {
			h, err := RunHealth(fixture(t, tc.fixture), s.Health)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %s", h.Status, h.Message)
			if h.Status != tc.status {
				t.Errorf("status = %q, want %q (message %q)", h.Status, tc.status, h.Message)
			}
			if strings.TrimSpace(h.Message) == "" {
				t.Errorf("empty message")
			}
			if !strings.Contains(h.Message, tc.contains) {
				t.Errorf("message %q does not contain %q", h.Message, tc.contains)
			}
		})
	}
}

// The Stalled message is what a human needs; Degraded must carry it whole.
func TestHealthDegradedCarriesStalledMessage(t *testing.T) {
	s := scripts(t)
	for _, name := range []string{"stalled-already-registered", "replacement-required", "deletion-blocked"} {
		obj := fixture(t, name)
		h, err := RunHealth(obj, s.Health)
		if err != nil {
			t.Fatal(err)
		}
		var want string
		for _, c := range obj["status"].(map[string]any)["conditions"].([]any) {
			if c := c.(map[string]any); c["type"] == "Stalled" {
				want = c["message"].(string)
			}
		}
		if want == "" || !strings.Contains(h.Message, want) {
			t.Errorf("%s: message %q does not carry the Stalled message %q", name, h.Message, want)
		}
	}
}

func TestHealthFixturesAllCovered(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "health", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	covered := map[string]bool{}
	for _, tc := range healthCases {
		covered[tc.fixture] = true
	}
	for _, f := range files {
		if name := strings.TrimSuffix(filepath.Base(f), ".yaml"); !covered[name] {
			t.Errorf("fixture %s has no expectation in healthCases", name)
		}
	}
	if len(files) != len(healthCases) {
		t.Errorf("%d fixtures, %d cases", len(files), len(healthCases))
	}
}

// Every condition reason of the status contract appears in some fixture.
func TestHealthFixturesCoverEveryReason(t *testing.T) {
	reasons := []string{"Available", "Creating", "Updating", "Provisioning", "SecretNotFound",
		"APIUnavailable", "RegistrationRejected", "UpdateRejected", "RegistrationFailed",
		"AlreadyRegistered", "DuplicatePhoneNumber", "IdMismatch", "ReplacementRequired",
		"Deleting", "DeletionBlocked", "Paused"}
	seen := map[string]bool{}
	for _, tc := range healthCases {
		st, _ := fixture(t, tc.fixture)["status"].(map[string]any)
		conds, _ := st["conditions"].([]any)
		for _, c := range conds {
			seen[c.(map[string]any)["reason"].(string)] = true
		}
	}
	for _, r := range reasons {
		if !seen[r] {
			t.Errorf("no fixture uses reason %s", r)
		}
	}
}

// Argo CD hands the script integers as Lua numbers whatever their Go type (int64 from a live
// object); the generation comparison must hold for both.
func TestHealthIntegerGenerations(t *testing.T) {
	s := scripts(t)
	obj := fixture(t, "generation-lagging")
	obj["metadata"].(map[string]any)["generation"] = int64(3)
	obj["status"].(map[string]any)["observedGeneration"] = int64(2)
	if h, err := RunHealth(obj, s.Health); err != nil || h.Status != "Progressing" {
		t.Fatalf("lagging with int64: %+v, %v", h, err)
	}
	obj["status"].(map[string]any)["observedGeneration"] = int64(3)
	if h, err := RunHealth(obj, s.Health); err != nil || h.Status != "Healthy" {
		t.Fatalf("caught up with int64: %+v, %v", h, err)
	}
}

func discover(t *testing.T, s Scripts, obj map[string]any) map[string]Action {
	t.Helper()
	actions, err := RunDiscovery(obj, s.Discovery)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range actions {
		names = append(names, n)
	}
	sort.Strings(names)
	want := append([]string(nil), ActionNames...)
	sort.Strings(want)
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("discovered %v, want %v", names, want)
	}
	for _, a := range actions {
		if a.IconClass == "" || a.DisplayName == "" {
			t.Errorf("%s: no iconClass/displayName", a.Name)
		}
	}
	return actions
}

func TestDiscovery(t *testing.T) {
	s := scripts(t)
	for _, tc := range []struct {
		fixture string
		paused  bool
	}{
		{"available", false},
		{"no-status", false},
		{"paused-annotation-false", false},
		{"paused", true},
		{"paused-not-yet-acknowledged", true},
		{"resuming", false},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			a := discover(t, s, fixture(t, tc.fixture))
			if a["pause"].Disabled != tc.paused {
				t.Errorf("pause disabled = %v, want %v", a["pause"].Disabled, tc.paused)
			}
			if a["resume"].Disabled != !tc.paused {
				t.Errorf("resume disabled = %v, want %v", a["resume"].Disabled, !tc.paused)
			}
			if a["reconcile-now"].Disabled != tc.paused {
				t.Errorf("reconcile-now disabled = %v, want %v (the operator ignores it while paused)", a["reconcile-now"].Disabled, tc.paused)
			}
		})
	}
	t.Run("no metadata.annotations", func(t *testing.T) {
		obj := fixture(t, "no-status")
		delete(obj["metadata"].(map[string]any), "annotations")
		if a := discover(t, s, obj); a["pause"].Disabled || !a["resume"].Disabled {
			t.Errorf("unexpected %+v", a)
		}
	})
}

func act(t *testing.T, s Scripts, name string, obj map[string]any) map[string]any {
	t.Helper()
	out, err := RunAction(obj, s.Actions[name])
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return out
}

// withoutAnnotations is obj less metadata.annotations, normalised through JSON.
func withoutAnnotations(t *testing.T, obj map[string]any) any {
	t.Helper()
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	delete(c["metadata"].(map[string]any), "annotations")
	return c
}

// An action touches only the annotations: spec and status (including empty maps, which the
// Lua round trip turns into empty arrays) come back as they were.
func assertOnlyAnnotationsChanged(t *testing.T, before, after map[string]any) {
	t.Helper()
	if !reflect.DeepEqual(withoutAnnotations(t, before), withoutAnnotations(t, after)) {
		b, _ := json.Marshal(before)
		a, _ := json.Marshal(after)
		t.Errorf("the action changed more than annotations:\nbefore %s\nafter  %s", b, a)
	}
}

func TestReconcileNow(t *testing.T) {
	s := scripts(t)
	obj := fixture(t, "available")
	obj["spec"].(map[string]any)["inboundRouting"] = map[string]any{} // an empty map must survive

	first := act(t, s, "reconcile-now", obj)
	assertOnlyAnnotationsChanged(t, obj, first)
	tok1, _ := annotations(first)[reconcileKey].(string)
	if tok1 == "" {
		t.Fatalf("no %s annotation: %v", reconcileKey, annotations(first))
	}
	if _, err := time.Parse("2006-01-02T15:04:05Z", strings.TrimSuffix(tok1, ".1")); err != nil {
		t.Errorf("token %q is not a UTC timestamp: %v", tok1, err)
	}
	if annotations(first)["oneinbox.ai/phone-number-id"] != annotations(obj)["oneinbox.ai/phone-number-id"] {
		t.Errorf("other annotations lost: %v", annotations(first))
	}

	// A second and third request (usually within the same second) must still change the value.
	second := act(t, s, "reconcile-now", first)
	tok2, _ := annotations(second)[reconcileKey].(string)
	third := act(t, s, "reconcile-now", second)
	tok3, _ := annotations(third)[reconcileKey].(string)
	if tok2 == "" || tok2 == tok1 || tok3 == "" || tok3 == tok2 {
		t.Errorf("tokens do not change between requests: %q, %q, %q", tok1, tok2, tok3)
	}

	t.Run("no annotations yet", func(t *testing.T) {
		bare := fixture(t, "no-status")
		delete(bare["metadata"].(map[string]any), "annotations")
		out := act(t, s, "reconcile-now", bare)
		if v, _ := annotations(out)[reconcileKey].(string); v == "" {
			t.Errorf("annotation not set: %v", out["metadata"])
		}
	})
}

func TestPauseResume(t *testing.T) {
	s := scripts(t)
	obj := fixture(t, "available")

	paused := act(t, s, "pause", obj)
	assertOnlyAnnotationsChanged(t, obj, paused)
	if got := annotations(paused)[pausedKey]; got != "true" {
		t.Fatalf("after pause %s = %v", pausedKey, got)
	}
	if len(annotations(paused)) != len(annotations(obj))+1 {
		t.Errorf("pause changed other annotations: %v", annotations(paused))
	}
	if h, _ := RunHealth(paused, s.Health); h.Status != "Suspended" {
		t.Errorf("health after pause = %+v, want Suspended", h)
	}
	if a := discover(t, s, paused); !a["pause"].Disabled || a["resume"].Disabled {
		t.Errorf("discovery after pause: %+v", a)
	}

	resumed := act(t, s, "resume", paused)
	assertOnlyAnnotationsChanged(t, obj, resumed)
	if _, ok := annotations(resumed)[pausedKey]; ok {
		t.Fatalf("after resume %s is still there: %v", pausedKey, annotations(resumed))
	}
	if !reflect.DeepEqual(annotations(resumed), annotations(obj)) {
		t.Errorf("resume changed other annotations: %v, was %v", annotations(resumed), annotations(obj))
	}
	if a := discover(t, s, resumed); a["pause"].Disabled || !a["resume"].Disabled {
		t.Errorf("discovery after resume: %+v", a)
	}

	t.Run("pause without annotations", func(t *testing.T) {
		bare := fixture(t, "no-status")
		delete(bare["metadata"].(map[string]any), "annotations")
		out := act(t, s, "pause", bare)
		if annotations(out)[pausedKey] != "true" {
			t.Errorf("not paused: %v", out["metadata"])
		}
	})

	// With oneinbox.ai/paused as the only annotation, the emptied table would encode as [] and
	// Argo CD would restore the old map, leaving the object paused.
	t.Run("resume when paused is the only annotation", func(t *testing.T) {
		only := fixture(t, "paused")
		only["metadata"].(map[string]any)["annotations"] = map[string]any{pausedKey: "true"}
		out := act(t, s, "resume", only)
		if _, ok := annotations(out)[pausedKey]; ok {
			t.Errorf("still paused: %v", out["metadata"])
		}
	})

	t.Run("resume when not paused is harmless", func(t *testing.T) {
		out := act(t, s, "resume", fixture(t, "available"))
		if !reflect.DeepEqual(annotations(out), annotations(fixture(t, "available"))) {
			t.Errorf("annotations changed: %v", annotations(out))
		}
	})
}

type configMap struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
}

type resourceActions struct {
	Discovery   string `yaml:"discovery.lua"`
	Definitions []struct {
		Name   string `yaml:"name"`
		Action string `yaml:"action.lua"`
	} `yaml:"definitions"`
}

// argocd-cm.yaml carries exactly the .lua files, in Argo CD's format.
func TestConfigMap(t *testing.T) {
	s := scripts(t)
	path := filepath.Join(ChartDir, "argocd-cm.yaml")
	if *update {
		text, err := RenderConfigMap(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cm configMap
	if err := yaml.Unmarshal(raw, &cm); err != nil {
		t.Fatal(err)
	}
	if cm.APIVersion != "v1" || cm.Kind != "ConfigMap" || cm.Metadata.Name != "argocd-cm" {
		t.Errorf("not the argocd-cm ConfigMap: %s %s %s", cm.APIVersion, cm.Kind, cm.Metadata.Name)
	}
	if len(cm.Data) != 2 {
		t.Errorf("data keys: want exactly %s and %s, got %d keys", HealthKey, ActionsKey, len(cm.Data))
	}
	if cm.Data[HealthKey] != s.Health {
		t.Errorf("%s differs from health.lua (regenerate with -update)", HealthKey)
	}
	var ra resourceActions
	if err := yaml.Unmarshal([]byte(cm.Data[ActionsKey]), &ra); err != nil {
		t.Fatalf("%s: %v", ActionsKey, err)
	}
	if ra.Discovery != s.Discovery {
		t.Errorf("discovery.lua differs from actions/discovery.lua (regenerate with -update)")
	}
	var names []string
	for _, d := range ra.Definitions {
		names = append(names, d.Name)
		want, ok := s.Actions[d.Name]
		if !ok {
			t.Errorf("definition %q has no actions/%s/action.lua", d.Name, d.Name)
		} else if d.Action != want {
			t.Errorf("action %q differs from actions/%s/action.lua (regenerate with -update)", d.Name, d.Name)
		}
	}
	if !reflect.DeepEqual(names, ActionNames) {
		t.Errorf("definitions %v, want %v", names, ActionNames)
	}

	// The action directories are exactly the defined actions.
	dirs, err := os.ReadDir(filepath.Join(ChartDir, "actions"))
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, d := range dirs {
		if d.IsDir() {
			found = append(found, d.Name())
		}
	}
	want := append([]string(nil), ActionNames...)
	sort.Strings(want)
	sort.Strings(found)
	if !reflect.DeepEqual(found, want) {
		t.Errorf("action directories %v, want %v", found, want)
	}
}

// The harness gives scripts what Argo CD gives them, no more: no string or math library,
// and only os.time and os.date.
func TestHarnessMatchesArgoLibraries(t *testing.T) {
	obj := map[string]any{"metadata": map[string]any{"name": "x"}}
	for _, script := range []string{
		`return {status = string.format("%s", "Healthy")}`,
		`return {status = tostring(math.floor(1))}`,
		`return {status = os.getenv("HOME")}`,
		`os.execute("true") return {}`,
	} {
		if _, err := RunHealth(obj, script); err == nil {
			t.Errorf("script %q ran; Argo CD would not have the library", script)
		}
	}
	h, err := RunHealth(obj, `local os = require("os") return {status = "Healthy", message = os.date("!%Y-%m-%dT%XZ") .. " " .. os.time()}`)
	if err != nil || h.Status != "Healthy" || len(h.Message) < len("2006-01-02T15:04:05Z 1") {
		t.Errorf("os.date/os.time: %+v, %v", h, err)
	}
	if h, _ := RunHealth(obj, `return {status = "Fine"}`); h.Status != "Unknown" {
		t.Errorf("an invalid status must become Unknown, got %+v", h)
	}
}
