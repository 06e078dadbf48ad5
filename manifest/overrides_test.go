package manifest

import (
	"reflect"
	"testing"
)

func TestSplitCommand(t *testing.T) {
	for in, want := range map[string][]string{
		`/bin/app`:                       {"/bin/app"},
		`/bin/app  --port 80`:            {"/bin/app", "--port", "80"},
		`/bin/sh -c "echo $X, world"`:    {"/bin/sh", "-c", "echo $X, world"},
		`/bin/a 'it''s' "" x\ y`:         {"/bin/a", "its", "", "x y"},
		`/bin/a "quote \" inside" 'b\c'`: {"/bin/a", `quote " inside`, `b\c`},
	} {
		got, err := SplitCommand(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("SplitCommand(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{`/bin/a "open`, `/bin/a 'open`, `/bin/a \`} {
		if _, err := SplitCommand(bad); err == nil {
			t.Errorf("SplitCommand(%q) accepted", bad)
		}
	}
}

func TestParsePortAndMount(t *testing.T) {
	if p, err := ParsePort("http:8080"); err != nil || p != (Port{Name: "http", Protocol: "tcp", Port: 8080}) {
		t.Errorf("http:8080: %+v %v", p, err)
	}
	if p, err := ParsePort("dns:udp:53"); err != nil || p != (Port{Name: "dns", Protocol: "udp", Port: 53}) {
		t.Errorf("dns:udp:53: %+v %v", p, err)
	}
	for _, bad := range []string{"http", "http:0", "http:65536", "Http:80", "http:sctp:80", "a:b:c:d"} {
		if _, err := ParsePort(bad); err == nil {
			t.Errorf("ParsePort(%q) accepted", bad)
		}
	}
	if m, err := ParseMount("cfg:/etc/app:ro"); err != nil || m != (Mount{Name: "cfg", Path: "/etc/app", ReadOnly: true}) {
		t.Errorf("cfg:/etc/app:ro: %+v %v", m, err)
	}
	for _, bad := range []string{"data", "data:rel", "data:/x:rw", "Data:/x"} {
		if _, err := ParseMount(bad); err == nil {
			t.Errorf("ParseMount(%q) accepted", bad)
		}
	}
}
