package ocisign_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nix2aci/nix2aci/ocisign"
)

// The payload is byte for byte what containers/image writes for the same
// values (encoding/json of maps: members sorted, HTML characters
// escaped), with the reference in its explicit form.
func TestPayloadBytes(t *testing.T) {
	p, err := ocisign.Payload("busybox:1.36", "sha256:"+hex64, "nix2aci <dev> & co", time.Unix(1700000000, 999))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"critical":{"identity":{"docker-reference":"docker.io/library/busybox:1.36"},"image":{"docker-manifest-digest":"sha256:` + hex64 + `"},"type":"atomic container signature"},"optional":{"creator":"nix2aci \u003cdev\u003e \u0026 co","timestamp":1700000000}}`
	if string(p) != want {
		t.Errorf("got  %s\nwant %s", p, want)
	}
	p, err = ocisign.Payload("example.com/app@sha256:"+hex64, "sha256:"+hex64, "", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"critical":{"identity":{"docker-reference":"example.com/app@sha256:` + hex64 + `"},"image":{"docker-manifest-digest":"sha256:` + hex64 + `"},"type":"atomic container signature"},"optional":{}}`; string(p) != want {
		t.Errorf("got  %s\nwant %s", p, want)
	}
	c, err := ocisign.ParsePayload(p)
	if err != nil || c.Reference != "example.com/app@sha256:"+hex64 || c.HasTimestamp || c.Creator != "" {
		t.Errorf("parsing it back: %+v, %v", c, err)
	}
}

func TestPayloadRefuses(t *testing.T) {
	var re *ocisign.ReferenceError
	if _, err := ocisign.Payload("example.com/app", "sha256:"+hex64, "", time.Time{}); !errors.As(err, &re) || !strings.Contains(err.Error(), "example.com/app:latest") {
		t.Errorf("a reference without tag: %v", err)
	}
	if _, err := ocisign.Payload("Example.com/App:1", "sha256:"+hex64, "", time.Time{}); !errors.As(err, &re) {
		t.Errorf("an invalid reference: %v", err)
	}
	if _, err := ocisign.Payload("example.com/app:1", "sha256:1234", "", time.Time{}); err == nil || !strings.Contains(err.Error(), "hex digits") {
		t.Errorf("a short digest: %v", err)
	}
}

func TestParsePayloadIsStrict(t *testing.T) {
	d := `"sha256:` + hex64 + `"`
	crit := func(inner string) string { return `{"critical":{` + inner + `},"optional":{}}` }
	good := `"type":"atomic container signature","image":{"docker-manifest-digest":` + d + `},"identity":{"docker-reference":"example.com/a:1"}`
	if c, err := ocisign.ParsePayload([]byte(crit(good))); err != nil || c.ManifestDigest != "sha256:"+hex64 {
		t.Fatalf("the good payload: %+v %v", c, err)
	}
	// Unknown optional members are accepted, as the format asks.
	if _, err := ocisign.ParsePayload([]byte(`{"critical":{` + good + `},"optional":{"future":[1,{"x":null}],"timestamp":1e9}}`)); err != nil {
		t.Errorf("an unknown optional member: %v", err)
	}
	for name, tc := range map[string]struct{ doc, msg string }{
		"not JSON":                   {`critical`, "not a JSON object"},
		"an array":                   {`[]`, "not a JSON object"},
		"trailing data":              {crit(good) + `{}`, "followed by more data"},
		"trailing garbage":           {crit(good) + `x`, "followed by more data"},
		"a third top-level member":   {`{"critical":{` + good + `},"optional":{},"extra":1}`, `"extra"`},
		"no optional":                {`{"critical":{` + good + `}}`, `no "optional"`},
		"critical twice":             {`{"critical":{` + good + `},"critical":{` + good + `},"optional":{}}`, "twice"},
		"type twice":                 {crit(`"type":"atomic container signature",` + good), "twice"},
		"an unknown critical member": {crit(good + `,"signedBy":"me"`), `"signedBy"`},
		"another type":               {crit(strings.Replace(good, "atomic container", "cosign container", 1)), "critical.type"},
		"type not a string":          {crit(strings.Replace(good, `"atomic container signature"`, `1`, 1)), "not a string"},
		"digest not a string":        {crit(strings.Replace(good, d, `["x"]`, 1)), "not a string"},
		"a bad digest":               {crit(strings.Replace(good, hex64, "xyz", 1)), "docker-manifest-digest"},
		"an md5 digest":              {crit(strings.Replace(good, "sha256:", "md5:", 1)), "sha256 and sha512"},
		"an extra image member":      {crit(strings.Replace(good, `"docker-manifest-digest"`, `"x":1,"docker-manifest-digest"`, 1)), `"x"`},
		"an extra identity member":   {crit(strings.Replace(good, `"docker-reference"`, `"x":1,"docker-reference"`, 1)), `"x"`},
		"reference not a string":     {crit(strings.Replace(good, `"example.com/a:1"`, `null`, 1)), "not a string"},
		"fractional timestamp":       {`{"critical":{` + good + `},"optional":{"timestamp":1.5}}`, "integer"},
		"huge timestamp":             {`{"critical":{` + good + `},"optional":{"timestamp":1e300}}`, "integer"},
		"string timestamp":           {`{"critical":{` + good + `},"optional":{"timestamp":"1"}}`, "not a number"},
		"creator not a string":       {`{"critical":{` + good + `},"optional":{"creator":5}}`, "not a string"},
		"optional not an object":     {`{"critical":{` + good + `},"optional":null}`, "not a JSON object"},
		"too large":                  {crit(good) + strings.Repeat(" ", 20000), "more than"},
	} {
		_, err := ocisign.ParsePayload([]byte(tc.doc))
		var pe *ocisign.PayloadError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: got %v, want a PayloadError saying %q", name, err, tc.msg)
		}
	}
}
