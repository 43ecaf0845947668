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

func scripts(t *testing.T, kind string) Scripts {
	t.Helper()
	c, ok := Lookup(kind)
	if !ok {
		t.Fatalf("no customization for %s", kind)
	}
	s, err := LoadScripts(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func allScripts(t *testing.T) []Scripts {
	t.Helper()
	all, err := LoadAll()
	if err != nil {
		t.Fatal(err)
	}
	return all
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

func fixtureOf(t *testing.T, kind, name string) map[string]any {
	t.Helper()
	c, _ := Lookup(kind)
	return loadObject(t, filepath.Join(c.Dir(), "testdata", name+".yaml"))
}

// fixture is a PhoneNumber fixture (the actions' tests).
func fixture(t *testing.T, name string) map[string]any {
	t.Helper()
	return fixtureOf(t, "PhoneNumber", name)
}

func annotations(obj map[string]any) map[string]any {
	md, _ := obj["metadata"].(map[string]any)
	a, _ := md["annotations"].(map[string]any)
	return a
}

// The Stalled message is what a human needs; Degraded must carry it whole.
func TestHealthDegradedCarriesStalledMessage(t *testing.T) {
	cases := []struct{ kind, name string }{
		{"PhoneNumber", "stalled-already-registered"},
		{"PhoneNumber", "replacement-required"},
		{"PhoneNumber", "deletion-blocked"},
	}
	for _, kind := range AccountKinds {
		cases = append(cases, struct{ kind, name string }{kind, "stalled-api-key-rejected"},
			struct{ kind, name string }{kind, "deleting-in-use-stalled"})
	}
	for _, tc := range cases {
		s, name := scripts(t, tc.kind), tc.kind+"/"+tc.name
		obj := fixtureOf(t, tc.kind, tc.name)
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

// reasonSource says where the reasons of a kind's conditions are: the `pub const NAME: &str =
// "Value";` lines of consts (within its `pub mod reason` block when it has one), as used by some
// line of a .rs file under uses as reason::NAME.
type reasonSource struct{ consts, uses string }

var reasonSources = map[string]reasonSource{
	"PhoneNumber":            {"../../src/conditions.rs", "../../src"},
	"OneInboxAccount":        {"../../src/accounts/controller.rs", "../../src/accounts"},
	"ClusterOneInboxAccount": {"../../src/accounts/controller.rs", "../../src/accounts"},
}

// The reasons the operator sets for kind, read from its source.
func operatorReasons(t *testing.T, kind string) map[string]bool {
	t.Helper()
	src, ok := reasonSources[kind]
	if !ok {
		t.Fatalf("no reason source for %s", kind)
	}
	raw, err := os.ReadFile(src.consts)
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	// Only the reason module: the same file may hold other string constants.
	if m := regexp.MustCompile(`(?s)pub mod reason \{.*?\n\}`).FindString(text); m != "" {
		text = m
	}
	consts := map[string]string{}
	for _, m := range regexp.MustCompile(`pub const ([A-Z_]+): &str = "([A-Za-z]+)";`).FindAllStringSubmatch(text, -1) {
		consts[m[1]] = m[2]
	}
	used := map[string]bool{}
	err = filepath.Walk(src.uses, func(path string, _ os.FileInfo, err error) error {
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
	if len(used) < 5 {
		t.Fatalf("%s: found only %d reasons in %s: %v", kind, len(used), src.uses, used)
	}
	return used
}

// Every reason the operator sets appears in a health fixture of each kind, and no fixture shows
// a reason the operator never sets for that kind.
func TestHealthFixturesMatchOperatorReasons(t *testing.T) {
	for _, c := range Customizations {
		t.Run(c.Kind, func(t *testing.T) {
			reasons := operatorReasons(t, c.Kind)
			files, err := filepath.Glob(filepath.Join(c.Dir(), "testdata", "*.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, f := range files {
				st, _ := loadObject(t, f)["status"].(map[string]any)
				conds, _ := st["conditions"].([]any)
				for _, cond := range conds {
					r, _ := cond.(map[string]any)["reason"].(string)
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
		})
	}
}

// Argo CD hands the script integers as Lua numbers whatever their Go type (int64 from a live
// object); the generation comparison must hold for both.
func TestHealthIntegerGenerations(t *testing.T) {
	for _, c := range Customizations {
		s := scripts(t, c.Kind)
		obj := fixtureOf(t, c.Kind, "generation-lagging")
		obj["metadata"].(map[string]any)["generation"] = int64(3)
		obj["status"].(map[string]any)["observedGeneration"] = int64(2)
		if h, err := RunHealth(obj, s.Health, SafeLibs); err != nil || h.Status != "Progressing" {
			t.Fatalf("%s lagging with int64: %+v, %v", c.Kind, h, err)
		}
		obj["status"].(map[string]any)["observedGeneration"] = int64(3)
		if h, err := RunHealth(obj, s.Health, SafeLibs); err != nil || h.Status != "Healthy" {
			t.Fatalf("%s caught up with int64: %+v, %v", c.Kind, h, err)
		}
	}
}

// The account kinds have the same status, so they share one script: Argo CD looks a script up
// by kind, hence one copy per kind directory, and the copies must not drift apart.
func TestAccountHealthScriptsIdentical(t *testing.T) {
	first := scripts(t, AccountKinds[0])
	for _, kind := range AccountKinds[1:] {
		if scripts(t, kind).Health != first.Health {
			t.Errorf("%s/health.lua differs from %s/health.lua: copy one over the other", kind, AccountKinds[0])
		}
	}
}

// The directories under resource_customizations/oneinbox.ai are exactly the customized kinds
// (a new directory must be listed to reach argocd-cm.yaml), only kinds with actions have an
// actions/ directory, and every kind of the operator's CRDs has a customization.
func TestCustomizationsCoverKinds(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join(CustomizationsDir, Group))
	if err != nil {
		t.Fatal(err)
	}
	var dirs, kinds []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	for _, c := range Customizations {
		kinds = append(kinds, c.Kind)
		_, err := os.Stat(filepath.Join(c.Dir(), "actions"))
		if has := err == nil; has != (len(c.ActionNames) > 0) {
			t.Errorf("%s: actions/ present %v, actions listed %v", c.Kind, has, c.ActionNames)
		}
	}
	sort.Strings(dirs)
	sort.Strings(kinds)
	if !reflect.DeepEqual(dirs, kinds) {
		t.Errorf("directories %v, customized kinds %v", dirs, kinds)
	}

	crds, err := filepath.Glob("../../crds/*.yaml")
	if err != nil || len(crds) == 0 {
		t.Fatalf("no CRDs in ../../crds: %v", err)
	}
	for _, f := range crds {
		var crd struct {
			Kind string `yaml:"kind"`
			Spec struct {
				Group string `yaml:"group"`
				Names struct {
					Kind string `yaml:"kind"`
				} `yaml:"names"`
			} `yaml:"spec"`
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(raw, &crd); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		// crds/ also holds the deletion-protection admission policy.
		if crd.Kind != "CustomResourceDefinition" {
			continue
		}
		if _, ok := Lookup(crd.Spec.Names.Kind); crd.Spec.Group != Group || !ok {
			t.Errorf("%s: %s/%s has no health check", filepath.Base(f), crd.Spec.Group, crd.Spec.Names.Kind)
		}
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
	want := append([]string(nil), s.ActionNames...)
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
	s := scripts(t, "PhoneNumber")
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
	s := scripts(t, "PhoneNumber")
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

// argocd-cm.yaml carries exactly the .lua files, in Argo CD's format: a health key per kind,
// an actions key per kind with actions.
func TestConfigMap(t *testing.T) {
	all := allScripts(t)
	path := filepath.Join(ChartDir, "argocd-cm.yaml")
	if *update {
		text, err := RenderConfigMap(all)
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
	rendered, err := RenderConfigMap(all)
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
	var keys []string
	for _, s := range all {
		keys = append(keys, s.HealthKey())
		if len(s.ActionNames) > 0 {
			keys = append(keys, s.ActionsKey())
		}
	}
	var got []string
	for k := range cm.Data {
		got = append(got, k)
	}
	sort.Strings(got)
	sort.Strings(keys)
	if !reflect.DeepEqual(got, keys) {
		t.Errorf("data keys %v, want exactly %v", got, keys)
	}
	for _, s := range all {
		if cm.Data[s.HealthKey()] != s.Health {
			t.Errorf("%s differs from %s/health.lua (regenerate with `make argocd-cm`)", s.HealthKey(), s.Kind)
		}
		if len(s.ActionNames) > 0 {
			checkActions(t, s, cm.Data[s.ActionsKey()])
		}
	}
}

// checkActions compares an actions key with the kind's actions/ directory.
func checkActions(t *testing.T, s Scripts, key string) {
	t.Helper()
	var ra resourceActions
	if err := yaml.Unmarshal([]byte(key), &ra); err != nil {
		t.Fatalf("%s: %v", s.ActionsKey(), err)
	}
	if ra.Discovery != s.Discovery {
		t.Errorf("%s: discovery.lua differs from actions/discovery.lua (regenerate with `make argocd-cm`)", s.Kind)
	}
	var names []string
	for _, d := range ra.Definitions {
		names = append(names, d.Name)
		want, ok := s.Actions[d.Name]
		if !ok {
			t.Errorf("%s: definition %q has no actions/%s/action.lua", s.Kind, d.Name, d.Name)
		} else if d.Action != want {
			t.Errorf("%s: action %q differs from actions/%s/action.lua (regenerate with `make argocd-cm`)", s.Kind, d.Name, d.Name)
		}
	}
	if !reflect.DeepEqual(names, s.ActionNames) {
		t.Errorf("%s: definitions %v, want %v", s.Kind, names, s.ActionNames)
	}

	// The action directories are exactly the defined actions.
	dirs, err := os.ReadDir(filepath.Join(s.Dir(), "actions"))
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, d := range dirs {
		if d.IsDir() && d.Name() != "testdata" {
			found = append(found, d.Name())
		}
	}
	want := append([]string(nil), s.ActionNames...)
	sort.Strings(want)
	sort.Strings(found)
	if !reflect.DeepEqual(found, want) {
		t.Errorf("%s: action directories %v, want %v", s.Kind, found, want)
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
