package argocd

// The fixtures in Argo CD's own format (health_test.yaml, actions/action_test.yaml), run the way
// Argo CD's util/lua tests run them (TestLuaHealthScript, TestLuaResourceActionsScript): walk
// resource_customizations/, find the scripts by the fixture's group and kind, compare. Stricter
// than upstream in three places, so that a fixture passing here passes there:
//
//   - a health status must be equal under both library sets a script can get (argocd-cm's
//     safe set and the built-in open set);
//   - discovery must return exactly the listed actions (upstream: only "each discovered action
//     is listed");
//   - an action's output must equal the expected object exactly (upstream's diff ignores fields
//     the expected object does not mention).
//
// The one normalisation is the reconcile-now token, a timestamp: it is checked here, then set to
// 0001-01-01T00:00:00Z on both sides (upstream needs the same one-line case in its test
// normalizer, as it has for Flux's reconcile.fluxcd.io/requestedAt).

import (
	"bytes"
	"encoding/json"
	"fmt"
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

type healthTestFile struct {
	Tests []struct {
		InputPath    string `json:"inputPath"`
		HealthStatus Health `json:"healthStatus"`
	} `json:"tests"`
}

type actionTestFile struct {
	DiscoveryTests []struct {
		InputPath string   `json:"inputPath"`
		Result    []Action `json:"result"`
	} `json:"discoveryTests"`
	ActionTests []struct {
		Action               string            `json:"action"`
		InputPath            string            `json:"inputPath"`
		ExpectedOutputPath   string            `json:"expectedOutputPath"`
		ExpectedErrorMessage string            `json:"expectedErrorMessage"`
		Parameters           map[string]string `json:"parameters"`
	} `json:"actionTests"`
}

// readYAML decodes a YAML file through JSON (as sigs.k8s.io/yaml does), refusing unknown fields
// so that a misspelt key in a fixture fails instead of being ignored.
func readYAML(t *testing.T, path string, into any) {
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
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// scriptsFor finds obj's scripts the way Argo CD finds built-in ones: by the group of its
// apiVersion and its kind, under resource_customizations/<group>/<kind>.
func scriptsFor(t *testing.T, obj map[string]any) Scripts {
	t.Helper()
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	group := ""
	if i := strings.LastIndex(apiVersion, "/"); i >= 0 {
		group = apiVersion[:i]
	}
	c, ok := Lookup(kind)
	if group != Group || !ok {
		t.Fatalf("no customization for %s %s", apiVersion, kind)
	}
	s, err := LoadScripts(c)
	if err != nil {
		t.Fatalf("no customization for %s %s: %v", apiVersion, kind, err)
	}
	return s
}

// walk calls fn for each directory under resource_customizations that holds file.
func walk(t *testing.T, file string, fn func(dir string)) int {
	t.Helper()
	n := 0
	err := filepath.Walk(CustomizationsDir, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if filepath.Base(path) == file {
			n++
			fn(filepath.Dir(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// assertAllUsed fails for a file in dir/testdata that no test of the file names.
func assertAllUsed(t *testing.T, dir string, used map[string]bool) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if rel := filepath.Join("testdata", filepath.Base(f)); !used[rel] {
			t.Errorf("%s is used by no test in %s", rel, dir)
		}
	}
}

func TestLuaHealthScript(t *testing.T) {
	n := walk(t, "health.lua", func(dir string) {
		var file healthTestFile
		readYAML(t, filepath.Join(dir, "health_test.yaml"), &file)
		if len(file.Tests) == 0 {
			t.Errorf("%s/health_test.yaml has no tests", dir)
		}
		used := map[string]bool{}
		for _, tc := range file.Tests {
			used[filepath.Clean(tc.InputPath)] = true
			name := filepath.Join(strings.TrimPrefix(dir, CustomizationsDir+"/"), tc.InputPath)
			t.Run(name, func(t *testing.T) {
				obj := loadObject(t, filepath.Join(dir, tc.InputPath))
				// A fixture copied from the other account kind would test the wrong script.
				if kind, _ := obj["kind"].(string); kind != filepath.Base(dir) {
					t.Fatalf("kind %s in the directory of %s", kind, filepath.Base(dir))
				}
				script := scriptsFor(t, obj).Health
				for _, libs := range []Libs{OpenLibs, SafeLibs} {
					got, err := RunHealth(obj, script, libs)
					if err != nil {
						t.Fatalf("libs %d: %v", libs, err)
					}
					if got != tc.HealthStatus {
						t.Errorf("libs %d:\n got  %+v\n want %+v", libs, got, tc.HealthStatus)
					}
				}
			})
		}
		assertAllUsed(t, dir, used)
	})
	if n == 0 {
		t.Fatal("no health.lua under " + CustomizationsDir)
	}
}

const (
	tokenKey         = "oneinbox.ai/reconcile-requested-at"
	tokenPlaceholder = "0001-01-01T00:00:00Z"
)

var tokenFormat = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ(\.1)?$`)

// normalizeToken checks the reconcile-now token a result carries (a current UTC time, new
// compared with the input's) and replaces it with the placeholder the expected output holds.
func normalizeToken(t *testing.T, result, input map[string]any) {
	t.Helper()
	a := annotations(result)
	tok, ok := a[tokenKey].(string)
	if !ok {
		return
	}
	if tok != tokenPlaceholder {
		if !tokenFormat.MatchString(tok) {
			t.Errorf("%s = %q is not a UTC timestamp", tokenKey, tok)
		} else if at, err := time.Parse(time.RFC3339, strings.TrimSuffix(tok, ".1")); err != nil || time.Since(at).Abs() > time.Minute {
			t.Errorf("%s = %q is not the current time", tokenKey, tok)
		}
		if before, _ := annotations(input)[tokenKey].(string); before == tok {
			t.Errorf("%s did not change: %q", tokenKey, tok)
		}
	}
	a[tokenKey] = tokenPlaceholder
}

// canonical is v through JSON, so that numbers and empty collections compare as Argo CD sees them.
func canonical(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func metaOf(obj map[string]any) (apiVersion, kind, name, namespace string) {
	md, _ := obj["metadata"].(map[string]any)
	apiVersion, _ = obj["apiVersion"].(string)
	kind, _ = obj["kind"].(string)
	name, _ = md["name"].(string)
	namespace, _ = md["namespace"].(string)
	return
}

func TestLuaResourceActionsScript(t *testing.T) {
	n := walk(t, "action_test.yaml", func(dir string) {
		var file actionTestFile
		readYAML(t, filepath.Join(dir, "action_test.yaml"), &file)
		if len(file.DiscoveryTests) == 0 || len(file.ActionTests) == 0 {
			t.Errorf("%s/action_test.yaml needs discovery and action tests", dir)
		}
		used := map[string]bool{}
		for _, tc := range file.DiscoveryTests {
			used[filepath.Clean(tc.InputPath)] = true
			t.Run("discovery/"+tc.InputPath, func(t *testing.T) {
				obj := loadObject(t, filepath.Join(dir, tc.InputPath))
				for _, libs := range []Libs{OpenLibs, SafeLibs} {
					found, err := RunDiscovery(obj, scriptsFor(t, obj).Discovery, libs)
					if err != nil {
						t.Fatal(err)
					}
					var got []Action
					for _, a := range found {
						got = append(got, a)
					}
					want := append([]Action(nil), tc.Result...)
					for _, l := range [][]Action{got, want} {
						sort.Slice(l, func(i, j int) bool { return l[i].Name < l[j].Name })
					}
					if !reflect.DeepEqual(got, want) {
						t.Errorf("libs %d:\n got  %+v\n want %+v", libs, got, want)
					}
				}
			})
		}
		for _, tc := range file.ActionTests {
			used[filepath.Clean(tc.InputPath)] = true
			used[filepath.Clean(tc.ExpectedOutputPath)] = true
			t.Run(fmt.Sprintf("actions/%s/%s", tc.Action, tc.InputPath), func(t *testing.T) {
				if len(tc.Parameters) > 0 {
					t.Fatal("action parameters: these actions take none, and the harness passes none")
				}
				source := loadObject(t, filepath.Join(dir, tc.InputPath))
				script, ok := scriptsFor(t, source).Actions[tc.Action]
				if !ok {
					t.Fatalf("no action %q", tc.Action)
				}
				result, err := RunAction(source, script)
				if tc.ExpectedErrorMessage != "" {
					if err == nil || err.Error() != tc.ExpectedErrorMessage {
						t.Fatalf("error %v, want %q", err, tc.ExpectedErrorMessage)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				// An old-style action patches its source object: same GVK, name and namespace.
				if a, b := fmt.Sprint(metaOf(result)), fmt.Sprint(metaOf(source)); a != b {
					t.Errorf("the action returned %s, not its source %s", a, b)
				}
				expected := loadObject(t, filepath.Join(dir, tc.ExpectedOutputPath))
				normalizeToken(t, result, source)
				if _, ok := annotations(expected)[tokenKey]; ok {
					annotations(expected)[tokenKey] = tokenPlaceholder
				}
				if got, want := canonical(t, result), canonical(t, expected); !reflect.DeepEqual(got, want) {
					g, _ := json.MarshalIndent(got, "", "  ")
					w, _ := json.MarshalIndent(want, "", "  ")
					t.Errorf("output differs from %s:\n got  %s\n want %s", tc.ExpectedOutputPath, g, w)
				}
			})
		}
		assertAllUsed(t, dir, used)
	})
	if n == 0 {
		t.Fatal("no action_test.yaml under " + CustomizationsDir)
	}
}
