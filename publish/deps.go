package publish

import (
	"context"
	"fmt"
	"os"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/appc/spec/schema/types"

	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/sign"
)

// The images' dependencies, found as rkt finds them: by name and labels
// through the template, then held to the image ID they are pinned to. A
// run moves layers before the apps on them, and publishes nothing unless
// every dependency is in the tree afterwards, pinned, and reached only
// once from each image.

// dependencyOrder returns the order to move jobs in: every image after
// those of the run it depends on.
func dependencyOrder(jobs []*job) ([]int, error) {
	byKey := map[string]int{}
	for i, j := range jobs {
		byKey[depKey(j.p.Name, j.p.Version, j.p.OS, j.p.Arch)] = i
	}
	const (
		unseen = iota
		visiting
		done
	)
	state := make([]int, len(jobs))
	var order []int
	var visit func(i int) error
	visit = func(i int) error {
		switch state[i] {
		case done:
			return nil
		case visiting:
			return &UsageError{fmt.Sprintf("%s depends on itself through its dependencies: publish images whose dependencies form no cycle", describe(jobs[i].p))}
		}
		state[i] = visiting
		for _, d := range jobs[i].deps {
			l := depLabels(jobs[i].p, d)
			if k, ok := byKey[depKey(d.ImageName.String(), l["version"], l["os"], l["arch"])]; ok {
				if err := visit(k); err != nil {
					return err
				}
			}
		}
		state[i] = done
		order = append(order, i)
		return nil
	}
	for i := range jobs {
		if err := visit(i); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// checkDependencies makes sure that every dependency of an image being
// published is in the tree afterwards, as rkt will look for it: by name
// and labels through the template, and then by image ID. One that is not
// being published must be in the tree now, as its file says: a complete
// image whose signature verifies with a key the site publishes for its
// prefix, with the image ID pinned.
func checkDependencies(ctx context.Context, root *os.Root, jobs []*job, s *site, pub *openpgp.Entity) error {
	inRun := map[string]Published{}
	runHosts := map[string]bool{}
	for _, j := range jobs {
		inRun[depKey(j.p.Name, j.p.Version, j.p.OS, j.p.Arch)] = j.p
		runHosts[hostOf(j.p.Name)] = true
	}
	checked := map[string]string{} // path in the tree -> its image ID
	for _, j := range jobs {
		p := j.p
		for _, d := range j.deps {
			labels := depLabels(p, d)
			name := d.ImageName.String()
			if labels["version"] == "" {
				return &UsageError{fmt.Sprintf("%s depends on %s without a version label: discovery could not name one file for it (there is no \"latest\" here); build it with nix2aci, which names every dependency's version", p.Name, name)}
			}
			id := ""
			if q, ok := inRun[depKey(name, labels["version"], labels["os"], labels["arch"])]; ok {
				id = q.ImageID
			} else {
				rel, _, ok := imageFile(s.base, s.dir, name, labels["version"], labels["os"], labels["arch"])
				if ok {
					_, ok = s.images[rel]
				}
				if !ok {
					return fmt.Errorf("%s depends on %s (version %s), which is neither being published nor in the site; publish its layers too (the build's .deps file lists them, or give the build's output directory)", p.Name, safeio.Quote(name), safeio.Quote(labels["version"]))
				}
				if id, ok = checked[rel]; !ok {
					host := hostOf(name)
					t := sign.NewTrust()
					for fp := range s.prefixes[host] {
						t.AddPrefix(host, s.keys[fp])
					}
					if runHosts[host] {
						t.AddPrefix(host, pub)
					}
					v, err := verifyIn(ctx, root, rel, t)
					if err != nil {
						if ctx.Err() != nil {
							return interruptedReading(ctx)
						}
						return fmt.Errorf("%s depends on %s, which the site holds as %s, but that is not a complete image signed by a key the site publishes for %s (%v): publish its layers again", p.Name, name, rel, host, err)
					}
					id = v.ImageID
					checked[rel] = id
				}
			}
			if d.ImageID == nil || d.ImageID.Empty() {
				return &UsageError{fmt.Sprintf("%s depends on %s by name alone, without its image ID: rkt would render whatever discovery finds under that name; build it with nix2aci, which pins every dependency", p.Name, name)}
			}
			if d.ImageID.String() != id {
				return fmt.Errorf("%s depends on %s with image ID %s, but the one published has %s; publish the layers of the same build", p.Name, d.ImageName, d.ImageID, id)
			}
		}
	}
	return nil
}

// maxTreeDepth bounds how deep dependencies may nest in a published tree.
const maxTreeDepth = 64

// checkTrees refuses an image whose dependency graph is not a tree: rkt
// renders every dependency of every image with no visited set, so an
// image reached twice (a diamond) is rendered twice, the second copy's
// files covering those of images above it, and a cycle never ends.
// Dependencies are followed as rkt follows them: by name and labels
// through the template to an image of the run or a file of the tree, each
// pinned by image ID (checkDependencies proved the pins of the run's).
func checkTrees(jobs []*job, s *site) error {
	inRun := map[string]*job{}
	for _, j := range jobs {
		inRun[depKey(j.p.Name, j.p.Version, j.p.OS, j.p.Arch)] = j
	}
	for _, j := range jobs {
		reached := map[string]string{} // image ID -> the image that depends on it first
		var walk func(of Published, deps types.Dependencies, depth int) error
		walk = func(of Published, deps types.Dependencies, depth int) error {
			if depth > maxTreeDepth {
				return &UsageError{fmt.Sprintf("the dependencies of %s nest more than %d deep (a cycle?): rkt would never finish rendering it", describe(j.p), maxTreeDepth)}
			}
			for _, d := range deps {
				if d.ImageID == nil {
					continue // refused by checkDependencies for the run's own
				}
				id := d.ImageID.String()
				if first, ok := reached[id]; ok {
					return &UsageError{fmt.Sprintf("%s reaches %s twice, through %s and %s: rkt renders a dependency once for each way it is reached, the later copy covering the files of images above it. Build it on a chain (layer groups, each on the one below) or a tree", describe(j.p), d.ImageName, first, of.Name)}
				}
				reached[id] = of.Name
				labels := depLabels(of, d)
				next := Published{Name: d.ImageName.String(), Version: labels["version"], OS: labels["os"], Arch: labels["arch"]}
				var nextDeps types.Dependencies
				if q, ok := inRun[depKey(next.Name, next.Version, next.OS, next.Arch)]; ok {
					nextDeps = q.deps
				} else if rel, _, ok := imageFile(s.base, s.dir, next.Name, next.Version, next.OS, next.Arch); ok {
					if f, ok := s.found[rel]; ok && f.err == nil {
						nextDeps = f.deps
					}
				}
				if err := walk(next, nextDeps, depth+1); err != nil {
					return err
				}
			}
			return nil
		}
		if err := walk(j.p, j.deps, 0); err != nil {
			return err
		}
	}
	return nil
}

func depKey(name, version, os, arch string) string {
	return name + "\x00" + version + "\x00" + os + "\x00" + arch
}

// depLabels are the labels a dependency of p is looked for with: its
// own, with p's os and arch where it has none.
func depLabels(p Published, d types.Dependency) map[string]string {
	labels := map[string]string{"os": p.OS, "arch": p.Arch}
	for _, l := range d.Labels {
		labels[l.Name.String()] = l.Value
	}
	return labels
}
