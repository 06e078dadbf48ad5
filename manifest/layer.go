package manifest

import (
	"errors"
	"fmt"
	"time"

	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"
)

// Dependency is an image another image is rendered on top of: rkt finds
// it in its store by ImageID (and fetches it by name and labels).
type Dependency struct {
	Name    string
	ImageID string // "sha512-…"
	Labels  map[string]string
}

// LayerKind is the KindLabel value of a layer image.
const LayerKind = "layer"

// NewLayer returns the manifest of a layer image: no app, the name and
// the labels version, os, arch and kind=layer, and a "created" time of the
// Unix epoch, so that its bytes depend on nothing but its contents.
func NewLayer(name, version, system string) (*schema.ImageManifest, error) {
	if err := CheckIdentifier(name); err != nil {
		return nil, err
	}
	osName, arch, err := OSArch(system)
	if err != nil {
		return nil, err
	}
	im := schema.BlankImageManifest()
	im.ACVersion = types.SemVer(ACVersion)
	im.Name = types.ACIdentifier(name)
	labels := map[string]string{"version": version, "os": osName, "arch": arch, KindLabel: LayerKind}
	for _, k := range sortedKeys(labels) {
		im.Labels = append(im.Labels, types.Label{Name: types.ACIdentifier(k), Value: labels[k]})
	}
	im.Annotations.Set("created", time.Unix(0, 0).UTC().Format(time.RFC3339))
	if _, err := im.MarshalJSON(); err != nil {
		return nil, fmt.Errorf("layer manifest for %s is not valid: %w", name, err)
	}
	return im, nil
}

// AddDependencies appends deps to im, in rendering order.
func AddDependencies(im *schema.ImageManifest, deps []Dependency) error {
	for _, d := range deps {
		id, err := types.NewHash(d.ImageID)
		if err != nil {
			return fmt.Errorf("dependency %s: %w", d.Name, err)
		}
		dep := types.Dependency{ImageName: types.ACIdentifier(d.Name), ImageID: id}
		for _, k := range sortedKeys(d.Labels) {
			dep.Labels = append(dep.Labels, types.Label{Name: types.ACIdentifier(k), Value: d.Labels[k]})
		}
		im.Dependencies = append(im.Dependencies, dep)
	}
	if _, err := Marshal(im); err != nil {
		var tl *TooLargeError
		if errors.As(err, &tl) {
			tl.Part = fmt.Sprintf("it lists %d layers", len(im.Dependencies))
			tl.Fix = "lower --max-layers"
			return tl
		}
		return fmt.Errorf("manifest with dependencies is not valid: %w", err)
	}
	return nil
}

// SetLabel sets the label name of im to value, replacing it where im has
// it already.
func SetLabel(im *schema.ImageManifest, name, value string) error {
	id, err := types.NewACIdentifier(name)
	if err != nil {
		return err
	}
	for i := range im.Labels {
		if im.Labels[i].Name == *id {
			im.Labels[i].Value = value
			return nil
		}
	}
	im.Labels = append(im.Labels, types.Label{Name: *id, Value: value})
	return nil
}
