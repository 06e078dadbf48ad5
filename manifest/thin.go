package manifest

import "strings"

// StoreMounts returns one read-only mount point per store path, at the
// path itself, named by MountName.
func StoreMounts(storePaths []string) []Mount {
	out := make([]Mount, len(storePaths))
	for i, p := range storePaths {
		out[i] = Mount{Name: MountName(p), Path: p, ReadOnly: true}
	}
	return out
}

// RktVolumeArgs returns the rkt run arguments that provide the volumes of
// StoreMounts from the host's store, one per line, so that
// `rkt run $(cat X.rkt-args) X.aci` works.
func RktVolumeArgs(storePaths []string) string {
	var b strings.Builder
	for _, p := range storePaths {
		b.WriteString("--volume=" + MountName(p) + ",kind=host,source=" + p + ",readOnly=true\n")
	}
	return b.String()
}
