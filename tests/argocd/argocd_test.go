package argocd

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite argocd-cm.yaml from resource_customizations/")

const (
	pausedKey    = "oneinbox.ai/paused"
	reconcileKey = "oneinbox.ai/reconcile-requested-at"
)

func scripts(t *testing.T) Scripts {
	t.Helper()
	s, err := LoadScripts(KindDir)
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
	return loadObject(t, filepath.Join(KindDir, "testdata", name+".yaml"))
}

func annotations(obj map[string]any) map[string]any {
	md, _ := obj["metadata"].(map[string]any)
	a, _ := md["annotations"].(map[string]any)
	return a
}

// The Stalled message is what a human needs; Degraded must carry it whole.
func TestHealthDegradedCarriesStalledMessage(t *testing.T) {
	s := scripts(t)
	for _, name := range []string{"stalled-already-registered", "replacement-required", "deletion-blocked"} {
		obj := fixture(t, name)
		h, err := RunHealth(obj, s.Health, SafeLibs)
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

// The reasons the operator sets, read from its source: the constants of `mod reason` in
// src/controller/status.rs that some other line of src/ uses as reason::NAME.
func operatorReasons(t *testing.T) map[string]bool {
	t.Helper()
	statusRs, err := os.ReadFile("../../src/controller/status.rs")
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]string{}
	for _, m := range regexp.MustCompile(`pub const ([A-Z_]+): &str = "([A-Za-z]+)";`).FindAllStringSubmatch(string(statusRs), -1) {
		consts[m[1]] = m[2]
	}
	used := map[string]bool{}
	err = filepath.Walk("../../src", func(path string, _ os.FileInfo, err error) error {
		if err != nil || !strings.HasSuffix(path, ".rs") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range regexp.MustCompile(`reason::([A-Z_]+)\b`).FindAllStringSubmatch(string(b), -1) {
			if v, ok := consts[m[1]]; ok {
				used[v] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(used) < 10 {
		t.Fatalf("found only %d reasons in src/: %v", len(used), used)
	}
	return used
}

// Every reason the operator sets appears in a health fixture, and no fixture shows a reason
// the operator never sets.
func TestHealthFixturesMatchOperatorReasons(t *testing.T) {
	reasons := operatorReasons(t)
	files, err := filepath.Glob(filepath.Join(KindDir, "testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		st, _ := loadObject(t, f)["status"].(map[string]any)
		conds, _ := st["conditions"].([]any)
		for _, c := range conds {
			r, _ := c.(map[string]any)["reason"].(string)
			seen[r] = true
			if !reasons[r] {
				t.Errorf("%s: reason %q is never set by the operator", filepath.Base(f), r)
			}
		}
	}
	for r := range reasons {
		if !seen[r] {
			t.Errorf("no health fixture uses reason %s", r)
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
	if h, err := RunHealth(obj, s.Health, SafeLibs); err != nil || h.Status != "Progressing" {
		t.Fatalf("lagging with int64: %+v, %v", h, err)
	}
	obj["status"].(map[string]any)["observedGeneration"] = int64(3)
	if h, err := RunHealth(obj, s.Health, SafeLibs); err != nil || h.Status != "Healthy" {
		t.Fatalf("caught up with int64: %+v, %v", h, err)
	}
}

func discover(t *testing.T, s Scripts, obj map[string]any) map[string]Action {
	t.Helper()
	actions, err := RunDiscovery(obj, s.Discovery, SafeLibs)
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
	if h, _ := RunHealth(paused, s.Health, SafeLibs); h.Status != "Suspended" {
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

	// pause on an object without annotations, resume of the only annotation and resume of an
	// object that is not paused: actions/action_test.yaml.
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
	// The verify twin: the committed snippet is exactly what the generator writes today.
	rendered, err := RenderConfigMap(s)
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != rendered {
		t.Errorf("%s is stale: regenerate it with `make argocd-cm`", path)
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
		t.Errorf("%s differs from health.lua (regenerate with `make argocd-cm`)", HealthKey)
	}
	var ra resourceActions
	if err := yaml.Unmarshal([]byte(cm.Data[ActionsKey]), &ra); err != nil {
		t.Fatalf("%s: %v", ActionsKey, err)
	}
	if ra.Discovery != s.Discovery {
		t.Errorf("discovery.lua differs from actions/discovery.lua (regenerate with `make argocd-cm`)")
	}
	var names []string
	for _, d := range ra.Definitions {
		names = append(names, d.Name)
		want, ok := s.Actions[d.Name]
		if !ok {
			t.Errorf("definition %q has no actions/%s/action.lua", d.Name, d.Name)
		} else if d.Action != want {
			t.Errorf("action %q differs from actions/%s/action.lua (regenerate with `make argocd-cm`)", d.Name, d.Name)
		}
	}
	if !reflect.DeepEqual(names, ActionNames) {
		t.Errorf("definitions %v, want %v", names, ActionNames)
	}

	// The action directories are exactly the defined actions.
	dirs, err := os.ReadDir(filepath.Join(KindDir, "actions"))
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, d := range dirs {
		if d.IsDir() && d.Name() != "testdata" {
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
		if _, err := RunHealth(obj, script, SafeLibs); err == nil {
			t.Errorf("script %q ran; Argo CD would not have the library", script)
		}
	}
	h, err := RunHealth(obj, `local os = require("os") return {status = "Healthy", message = os.date("!%Y-%m-%dT%XZ") .. " " .. os.time()}`, SafeLibs)
	if err != nil || h.Status != "Healthy" || len(h.Message) < len("2006-01-02T15:04:05Z 1") {
		t.Errorf("os.date/os.time: %+v, %v", h, err)
	}
	if h, _ := RunHealth(obj, `return {status = "Fine"}`, SafeLibs); h.Status != "Unknown" {
		t.Errorf("an invalid status must become Unknown, got %+v", h)
	}
	// A built-in script gets the standard libraries (useOpenLibs), as in Argo CD's own tests.
	if h, err := RunHealth(obj, `return {status = string.format("%s", "Healthy")}`, OpenLibs); err != nil || h.Status != "Healthy" {
		t.Errorf("open libraries: %+v, %v", h, err)
	}
}
