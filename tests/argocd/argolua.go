// Package argocd runs the Argo CD resource customizations for oneinbox.ai (PhoneNumber and the two
// account kinds; charts/oneinbox-operator/files/argocd/resource_customizations, in Argo CD's own
// layout) the way Argo CD runs them, without the argo-cd module:
//
//   - a gopher-lua state with package, base, table and a "safe" os library that has only
//     os.time and os.date (Argo CD's util/lua runLua and oslib_safe). A script from argocd-cm
//     gets only these (unless useOpenLibs is set); a built-in script, and Argo CD's own health
//     tests, get the standard libraries as well (Libs: OpenLibs);
//   - the live object converted to nested Lua tables and set as the global `obj`
//     (Argo CD's decodeValue: maps and slices become tables, every number an LNumber), and
//     an empty `actionParams` table;
//   - the script's return value encoded to JSON with layeh.com/gopher-json, as Argo CD does,
//     then read as a health status, an action list or the patched object. For old-style
//     actions the patched object goes through Argo CD's cleanReturnedObj (empty Lua tables
//     encode as [] and are turned back into the original map).
package argocd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
)

// Health is what a health.lua returns (gitops-engine's health.HealthStatus).
type Health struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
}

// ActionParam is Argo CD's ResourceActionParam.
type ActionParam struct {
	Name string `json:"name,omitempty"`
}

// Action is one entry of what a discovery.lua returns (Argo CD's ResourceAction).
type Action struct {
	Name        string        `json:"name,omitempty"`
	Params      []ActionParam `json:"params,omitempty"`
	Disabled    bool          `json:"disabled,omitempty"`
	IconClass   string        `json:"iconClass,omitempty"`
	DisplayName string        `json:"displayName,omitempty"`
}

// Libs is the Lua library set a script runs with.
type Libs int

const (
	// SafeLibs: package, base, table and the safe os; what a script in argocd-cm gets.
	SafeLibs Libs = iota
	// OpenLibs: all of gopher-lua's standard libraries, then the safe os over os; what a
	// built-in script in Argo CD's resource_customizations gets (useOpenLibs).
	OpenLibs
)

// validHealth are the statuses Argo CD accepts from a script; anything else becomes Unknown.
var validHealth = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true,
}

// run executes script with obj as the global `obj` and returns the JSON encoding of the
// value the script returned.
func run(obj map[string]any, script string, libs Libs) ([]byte, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: libs != OpenLibs})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return nil, fmt.Errorf("open %s: %w", lib.name, err)
		}
	}
	l.PreloadModule(lua.OsLibName, safeOsLoader)

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("actionParams", l.CreateTable(0, 0))
	l.SetGlobal("obj", decodeValue(l, obj))
	if err := l.DoString(script); err != nil {
		return nil, err
	}
	ret := l.Get(-1)
	if ret.Type() == lua.LTNil {
		return []byte("null"), nil
	}
	if ret.Type() != lua.LTTable {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	return luajson.Encode(ret)
}

// RunHealth runs a health.lua against obj as Argo CD's ExecuteHealthLua does: nil or an
// empty table is an empty status, an unknown status code becomes Unknown.
func RunHealth(obj map[string]any, script string, libs Libs) (Health, error) {
	out, err := run(obj, script, libs)
	if err != nil {
		return Health{}, err
	}
	if string(out) == "null" || string(out) == "[]" {
		return Health{}, nil
	}
	var h Health
	if err := json.Unmarshal(out, &h); err != nil {
		return Health{}, fmt.Errorf("health script returned %s: %w", out, err)
	}
	if !validHealth[h.Status] {
		return Health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return h, nil
}

// RunDiscovery runs a discovery.lua against obj; the result is keyed by action name.
func RunDiscovery(obj map[string]any, script string, libs Libs) (map[string]Action, error) {
	out, err := run(obj, script, libs)
	if err != nil {
		return nil, err
	}
	actions := map[string]Action{}
	if string(out) == "[]" { // an empty table: no actions
		return actions, nil
	}
	var raw map[string]any
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("discovery script returned %s: %w", out, err)
	}
	for name, v := range raw {
		a := Action{Name: name}
		if m, ok := v.(map[string]any); ok { // an empty table ([]) means an enabled action
			b, err := json.Marshal(m)
			if err != nil {
				return nil, err
			}
			if err := json.Unmarshal(b, &a); err != nil {
				return nil, fmt.Errorf("action %s: %w", name, err)
			}
			a.Name = name
			a.Disabled, _ = m["disabled"].(bool)
		}
		actions[name] = a
	}
	return actions, nil
}

// RunAction runs an old-style action.lua (one that returns the modified object) against obj
// and returns the object Argo CD would patch the live one to.
func RunAction(obj map[string]any, script string) (map[string]any, error) {
	// The script may modify the tables it was given, never obj itself: decodeValue copies.
	// Argo CD runs actions with the safe libraries only, built-in or not.
	out, err := run(obj, script, SafeLibs)
	if err != nil {
		return nil, err
	}
	if bytes.HasPrefix(out, []byte("[")) {
		return nil, fmt.Errorf("action returned a list (new-style action), expected the object: %s", out)
	}
	var patched map[string]any
	if err := json.Unmarshal(out, &patched); err != nil {
		return nil, fmt.Errorf("action returned %s: %w", out, err)
	}
	return cleanReturnedObj(patched, obj), nil
}

// decodeValue mirrors Argo CD's conversion of the live object into Lua values.
func decodeValue(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case []any:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(v))
		for key, item := range v {
			tbl.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}

// cleanReturnedObj mirrors Argo CD: where the script returned an empty array for what was a
// map (an empty Lua table), the original map is kept; recurses through maps and arrays.
func cleanReturnedObj(newObj, obj map[string]any) map[string]any {
	for key, oldValue := range obj {
		newValue, ok := newObj[key]
		if !ok {
			continue
		}
		switch nv := newValue.(type) {
		case map[string]any:
			if ov, ok := oldValue.(map[string]any); ok {
				newObj[key] = cleanReturnedObj(nv, ov)
			}
		case []any:
			switch ov := oldValue.(type) {
			case map[string]any:
				if len(nv) == 0 {
					newObj[key] = ov
				}
			case []any:
				newObj[key] = cleanReturnedArray(nv, ov)
			}
		}
	}
	return newObj
}

func cleanReturnedArray(newArr, arr []any) []any {
	for i := range newArr {
		if i >= len(arr) {
			break
		}
		switch nv := newArr[i].(type) {
		case map[string]any:
			if ov, ok := arr[i].(map[string]any); ok {
				newArr[i] = cleanReturnedObj(nv, ov)
			}
		case []any:
			if ov, ok := arr[i].([]any); ok {
				newArr[i] = cleanReturnedArray(nv, ov)
			}
		}
	}
	return newArr
}

// The "safe" os library Argo CD gives scripts: os.time and os.date only.
var safeOsFuncs = map[string]lua.LGFunction{
	"time": osTime,
	"date": osDate,
}

func openSafeOs(l *lua.LState) int {
	l.Push(l.RegisterModule(lua.OsLibName, safeOsFuncs))
	return 1
}

func safeOsLoader(l *lua.LState) int {
	l.Push(l.SetFuncs(l.NewTable(), safeOsFuncs))
	return 1
}

func osTime(l *lua.LState) int {
	if l.GetTop() == 0 {
		l.Push(lua.LNumber(time.Now().Unix()))
		return 1
	}
	tbl := l.CheckTable(1)
	field := func(name string, def int) int {
		if n, ok := tbl.RawGetString(name).(lua.LNumber); ok {
			return int(n)
		}
		return def
	}
	t := time.Date(field("year", -1), time.Month(field("month", -1)), field("day", -1),
		field("hour", 12), field("min", 0), field("sec", 0), 0, time.Local)
	l.Push(lua.LNumber(t.Unix()))
	return 1
}

func osDate(l *lua.LState) int {
	t := time.Now()
	format := "%c"
	if l.GetTop() >= 1 {
		format = l.CheckString(1)
		if strings.HasPrefix(format, "!") {
			t = t.UTC()
			format = strings.TrimLeft(format, "!")
		}
		if l.GetTop() >= 2 {
			t = time.Unix(l.CheckInt64(2), 0)
		}
		if strings.HasPrefix(format, "*t") {
			ret := l.NewTable()
			for k, v := range map[string]int{
				"year": t.Year(), "month": int(t.Month()), "day": t.Day(), "hour": t.Hour(),
				"min": t.Minute(), "sec": t.Second(), "wday": int(t.Weekday()) + 1, "yday": 0,
			} {
				ret.RawSetString(k, lua.LNumber(v))
			}
			ret.RawSetString("isdst", lua.LFalse)
			l.Push(ret)
			return 1
		}
	}
	l.Push(lua.LString(strftime(t, format)))
	return 1
}

// The conversions Argo CD's os.date supports; others are copied through as "%x".
var strftimeLayouts = map[byte]string{
	'a': "mon", 'A': "Monday", 'b': "Jan", 'B': "January", 'c': "02 Jan 06 15:04 MST", 'd': "02",
	'F': "2006-01-02", 'H': "15", 'I': "03", 'm': "01", 'M': "04", 'p': "PM", 'P': "pm", 'S': "05",
	'x': "15/04/05", 'X': "15:04:05", 'y': "06", 'Y': "2006", 'z': "-0700", 'Z': "MST",
}

func strftime(t time.Time, format string) string {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i == len(format)-1 {
			b.WriteByte(c)
			continue
		}
		i++
		switch f := format[i]; {
		case f == '%':
			b.WriteByte('%')
		case f == 'w':
			b.WriteString(strconv.Itoa(int(t.Weekday())))
		default:
			if layout, ok := strftimeLayouts[f]; ok {
				b.WriteString(t.Format(layout))
			} else {
				b.WriteByte('%')
				b.WriteByte(f)
			}
		}
	}
	return b.String()
}
