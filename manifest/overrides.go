package manifest

import (
	"fmt"
	"strconv"
	"strings"
)

// Overrides are manifest settings given for one build (on the command
// line) rather than in a recipe; they win over the recipe's.
type Overrides struct {
	Exec        []string          // the whole command: program, then arguments
	User, Group string            // a name or a number
	Env         map[string]string // added to the recipe's environment
	Labels      map[string]string
	Annotations map[string]string
	Ports       []Port
	Mounts      []Mount
}

// Apply writes o over s.
func (o Overrides) Apply(s *Spec) {
	if len(o.Exec) > 0 {
		s.Exec = o.Exec
	}
	if o.User != "" {
		s.User = o.User
	}
	if o.Group != "" {
		s.Group = o.Group
	}
	s.Environment = merge(s.Environment, o.Env)
	s.Labels = merge(s.Labels, o.Labels)
	s.Annotations = merge(s.Annotations, o.Annotations)
	for _, p := range o.Ports {
		s.Ports = replaceNamed(s.Ports, p, func(p Port) string { return p.Name })
	}
	for _, m := range o.Mounts {
		s.Mounts = replaceNamed(s.Mounts, m, func(m Mount) string { return m.Name })
	}
}

func merge(a, b map[string]string) map[string]string {
	if len(b) == 0 {
		return a
	}
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// replaceNamed replaces the element of xs named like x, or appends x.
func replaceNamed[T any](xs []T, x T, name func(T) string) []T {
	for i := range xs {
		if name(xs[i]) == name(x) {
			xs[i] = x
			return xs
		}
	}
	return append(xs, x)
}

// ParseKeyValue parses K=V (an environment variable, a label, an
// annotation).
func ParseKeyValue(what, s string) (string, string, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return "", "", fmt.Errorf("%s %s is not KEY=VALUE", what, quote(s))
	}
	return k, v, nil
}

// ParsePort parses NAME:PORT or NAME:PROTOCOL:PORT (protocol tcp or udp),
// as the manifest's ports are named for rkt run --port NAME:HOSTPORT.
func ParsePort(s string) (Port, error) {
	parts := strings.Split(s, ":")
	bad := fmt.Errorf("port %s is not NAME:PORT or NAME:PROTOCOL:PORT (e.g. http:8080, dns:udp:53)", quote(s))
	var p Port
	switch len(parts) {
	case 2:
		p.Name, p.Protocol = parts[0], "tcp"
	case 3:
		p.Name, p.Protocol = parts[0], parts[1]
	default:
		return p, bad
	}
	n, err := strconv.ParseUint(parts[len(parts)-1], 10, 16)
	if err != nil || n == 0 || (p.Protocol != "tcp" && p.Protocol != "udp") || !ValidACName.MatchString(p.Name) {
		return p, bad
	}
	p.Port = uint(n)
	return p, nil
}

// ParseMount parses NAME:PATH or NAME:PATH:ro, a mount point the app
// expects a volume at (rkt run --volume NAME,kind=host,source=…).
func ParseMount(s string) (Mount, error) {
	parts := strings.Split(s, ":")
	bad := fmt.Errorf("mount %s is not NAME:/PATH or NAME:/PATH:ro (e.g. data:/var/lib/app)", quote(s))
	var m Mount
	switch {
	case len(parts) == 2:
	case len(parts) == 3 && parts[2] == "ro":
		m.ReadOnly = true
	default:
		return m, bad
	}
	m.Name, m.Path = parts[0], parts[1]
	if !ValidACName.MatchString(m.Name) || !strings.HasPrefix(m.Path, "/") {
		return m, bad
	}
	return m, nil
}

// SplitCommand splits a command line into words as a shell would for
// plain words, '…' and "…" quoting and backslash escapes; nothing is
// expanded.
func SplitCommand(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord, quote := false, rune(0)
	escaped := false
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case r == '\\' && quote != '\'':
			escaped, inWord = true, true
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 || escaped {
		return nil, fmt.Errorf("unterminated quote or escape in %q", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
