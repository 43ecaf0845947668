package argocd

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ChartDir holds argocd-cm.yaml and resource_customizations/, relative to this module.
const ChartDir = "../../charts/oneinbox-operator/files/argocd"

// CustomizationsDir is laid out as Argo CD's own resource_customizations/: one directory per
// <group>/<kind> with health.lua, health_test.yaml and testdata/, and actions/ with
// discovery.lua, <action>/action.lua, action_test.yaml and testdata/.
var CustomizationsDir = filepath.Join(ChartDir, "resource_customizations")

// Group and Kind of the one resource this repository customizes.
const (
	Group = "oneinbox.ai"
	Kind  = "PhoneNumber"
)

// KindDir is resource_customizations/<group>/<kind>, where Argo CD looks a kind's scripts up.
var KindDir = filepath.Join(CustomizationsDir, Group, Kind)

// ActionNames are the resource actions, in the order argocd-cm.yaml lists them.
var ActionNames = []string{"reconcile-now", "pause", "resume"}

const (
	HealthKey  = "resource.customizations.health." + Group + "_" + Kind
	ActionsKey = "resource.customizations.actions." + Group + "_" + Kind
)

// Scripts are the Lua sources of one <group>/<kind> directory.
type Scripts struct {
	Health    string
	Discovery string
	Actions   map[string]string // by action name
}

// LoadScripts reads health.lua, actions/discovery.lua and actions/<name>/action.lua.
func LoadScripts(dir string) (Scripts, error) {
	read := func(parts ...string) (string, error) {
		b, err := os.ReadFile(filepath.Join(append([]string{dir}, parts...)...))
		return string(b), err
	}
	var s Scripts
	var err error
	if s.Health, err = read("health.lua"); err != nil {
		return s, err
	}
	if s.Discovery, err = read("actions", "discovery.lua"); err != nil {
		return s, err
	}
	s.Actions = map[string]string{}
	for _, name := range ActionNames {
		if s.Actions[name], err = read("actions", name, "action.lua"); err != nil {
			return s, err
		}
	}
	return s, nil
}

// RenderConfigMap writes the argocd-cm snippet that carries the scripts verbatim.
func RenderConfigMap(s Scripts) (string, error) {
	var b strings.Builder
	b.WriteString(`# Argo CD resource customizations for oneinbox.ai/PhoneNumber: health check and resource actions.
# GENERATED from resource_customizations/oneinbox.ai/PhoneNumber/ beside this file (Argo CD's own
# layout, tested with its health_test.yaml / action_test.yaml fixtures); do not edit. Regenerate:
#   make argocd-cm   (= cd tests/argocd && GOTOOLCHAIN=local GOWORK=off go test ./... -run TestConfigMap -update)
# This is a patch for the existing argocd-cm, not a replacement for it (change the namespace if
# Argo CD runs elsewhere):
#   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file argocd-cm.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
`)
	block := func(key, text string, indent int) error {
		if text == "" || !strings.HasSuffix(text, "\n") || strings.HasSuffix(text, "\n\n") {
			return fmt.Errorf("%s: a script must end with exactly one newline", key)
		}
		if strings.HasPrefix(text, " ") || strings.HasPrefix(text, "\t") || strings.Contains(text, "\t") {
			return fmt.Errorf("%s: a script must not start with a space or contain tabs (YAML block scalar)", key)
		}
		pad := strings.Repeat(" ", indent)
		b.WriteString(pad[:indent-2] + key + ": |\n")
		for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
			if line == "" {
				b.WriteString("\n")
			} else {
				b.WriteString(pad + line + "\n")
			}
		}
		return nil
	}
	if err := block(HealthKey, s.Health, 4); err != nil {
		return "", err
	}
	b.WriteString("  " + ActionsKey + ": |\n")
	if err := block("discovery.lua", s.Discovery, 6); err != nil {
		return "", err
	}
	b.WriteString("    definitions:\n")
	for _, name := range ActionNames {
		b.WriteString("      - name: " + name + "\n")
		if err := block("action.lua", s.Actions[name], 10); err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
	}
	return b.String(), nil
}
