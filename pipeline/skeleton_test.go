package pipeline

import (
	"strings"
	"testing"

	"github.com/nix2aci/nix2aci/manifest"
)

func TestSkeletonRefusesClashesAndBadNames(t *testing.T) {
	gid := 7
	for _, tc := range []struct {
		name string
		spec manifest.Spec
		want string
	}{
		{"uid clash", manifest.Spec{Users: []manifest.User{{Name: "a", UID: 10}, {Name: "b", UID: 10}}}, "users a and b both have uid 10"},
		{"uid of root", manifest.Spec{Users: []manifest.User{{Name: "a", UID: 0}}}, "users root and a both have uid 0"},
		{"twice", manifest.Spec{Users: []manifest.User{{Name: "a", UID: 10}, {Name: "a", UID: 11}}}, "user a is declared twice"},
		{"nobody", manifest.Spec{Users: []manifest.User{{Name: "nobody", UID: 10}}}, "is root or nobody"},
		{"bad name", manifest.Spec{Users: []manifest.User{{Name: "Web", UID: 10}}}, `user name "Web" is not a valid name`},
		{"colon", manifest.Spec{Users: []manifest.User{{Name: "a", UID: 10, Home: "/a:b"}}}, "not an absolute path without ':'"},
		{"gid clash", manifest.Spec{Groups: []manifest.Group{{Name: "x", GID: 5}, {Name: "y", GID: 5}}}, "groups x and y both have gid 5"},
		{"group gid differs", manifest.Spec{Groups: []manifest.Group{{Name: "x", GID: 5}}, Users: []manifest.User{{Name: "a", UID: 10, Group: "x", GID: &gid}}}, "group x is declared twice, with gids 5 and 7"},
		{"off with users", manifest.Spec{NoSkeleton: true, Users: []manifest.User{{Name: "a", UID: 10}}}, "turns the skeleton off"},
	} {
		_, err := Skeleton(tc.spec)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want %q", tc.name, err, tc.want)
		}
	}
	files, err := Skeleton(manifest.Spec{Users: []manifest.User{{Name: "web", UID: 1000}, {Name: "job", UID: 1001, Group: "web"}}})
	if err != nil {
		t.Fatal(err)
	}
	passwd, group := string(files[0].Data), string(files[1].Data)
	if !strings.Contains(passwd, "web:x:1000:1000::/var/empty:/bin/false\n") || !strings.Contains(passwd, "job:x:1001:1000:") {
		t.Errorf("passwd:\n%s", passwd)
	}
	if strings.Count(group, "web:") != 1 {
		t.Errorf("group:\n%s", group)
	}
}
