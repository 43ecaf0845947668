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
// <group>/<kind> with health.lua, health_test.yaml and testdata/, and, for a kind with actions,
// actions/ with discovery.lua, <action>/action.lua, action_test.yaml and testdata/.
var CustomizationsDir = filepath.Join(ChartDir, "resource_customizations")

// Group of the resources this repository customizes.
const Group = "oneinbox.ai"

// Customization is one <group>/<kind> directory and what it holds.
type Customization struct {
	Kind string
	// ActionNames are the resource actions, in the order argocd-cm.yaml lists them; none for a
	// kind with only a health check.
	ActionNames []string
}

// Customizations are the customized kinds, in the order argocd-cm.yaml lists their keys.
var Customizations = []Customization{
	{Kind: "PhoneNumber", ActionNames: []string{"reconcile-now", "pause", "resume"}},
	{Kind: "OneInboxAccount"},
	{Kind: "ClusterOneInboxAccount"},
}

// AccountKinds share one health.lua, kept byte-identical in both kind directories.
var AccountKinds = []string{"OneInboxAccount", "ClusterOneInboxAccount"}

// Lookup is the customization of kind, if this repository has one.
func Lookup(kind string) (Customization, bool) {
	for _, c := range Customizations {
		if c.Kind == kind {
			return c, true
		}
	}
	return Customization{}, false
}

// Dir is resource_customizations/<group>/<kind>, where Argo CD looks a kind's scripts up.
func (c Customization) Dir() string { return filepath.Join(CustomizationsDir, Group, c.Kind) }

// HealthKey and ActionsKey are the kind's keys in argocd-cm.
func (c Customization) HealthKey() string {
	return "resource.customizations.health." + Group + "_" + c.Kind
}

func (c Customization) ActionsKey() string {
	return "resource.customizations.actions." + Group + "_" + c.Kind
}

// Scripts are the Lua sources of one <group>/<kind> directory.
type Scripts struct {
	Customization
	Health    string
	Discovery string            // empty without actions
	Actions   map[string]string // by action name
}

// LoadScripts reads health.lua and, for a kind with actions, actions/discovery.lua and
// actions/<name>/action.lua.
func LoadScripts(c Customization) (Scripts, error) {
	read := func(parts ...string) (string, error) {
		b, err := os.ReadFile(filepath.Join(append([]string{c.Dir()}, parts...)...))
		return string(b), err
	}
	s := Scripts{Customization: c, Actions: map[string]string{}}
	var err error
	if s.Health, err = read("health.lua"); err != nil {
		return s, err
	}
	if len(c.ActionNames) == 0 {
		return s, nil
	}
	if s.Discovery, err = read("actions", "discovery.lua"); err != nil {
		return s, err
	}
	for _, name := range c.ActionNames {
		if s.Actions[name], err = read("actions", name, "action.lua"); err != nil {
			return s, err
		}
	}
	return s, nil
}

// LoadAll loads every customization, in the order of Customizations.
func LoadAll() ([]Scripts, error) {
	var all []Scripts
	for _, c := range Customizations {
		s, err := LoadScripts(c)
		if err != nil {
			return nil, err
		}
		all = append(all, s)
	}
	return all, nil
}

// RenderConfigMap writes the argocd-cm snippet that carries the scripts verbatim: each kind's
// health key, and its actions key if it has actions, in the order of all.
func RenderConfigMap(all []Scripts) (string, error) {
	var b strings.Builder
	b.WriteString(`# Argo CD resource customizations for oneinbox.ai: health checks for PhoneNumber, OneInboxAccount
# and ClusterOneInboxAccount, and resource actions for PhoneNumber.
# GENERATED from resource_customizations/oneinbox.ai/<Kind>/ beside this file (Argo CD's own
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
	for _, s := range all {
		if err := block(s.HealthKey(), s.Health, 4); err != nil {
			return "", err
		}
		if len(s.ActionNames) == 0 {
			continue
		}
		b.WriteString("  " + s.ActionsKey() + ": |\n")
		if err := block("discovery.lua", s.Discovery, 6); err != nil {
			return "", err
		}
		b.WriteString("    definitions:\n")
		for _, name := range s.ActionNames {
			b.WriteString("      - name: " + name + "\n")
			if err := block("action.lua", s.Actions[name], 10); err != nil {
				return "", fmt.Errorf("%s %s: %w", s.Kind, name, err)
			}
		}
	}
	return b.String(), nil
}
