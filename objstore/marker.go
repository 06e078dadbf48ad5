package objstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
)

// MaxMarker bounds a marker's bytes: room for MaxDepends layers with
// keys of the longest (1,024 bytes).
const MaxMarker = 1280 << 10

// MaxDepends bounds the dependencies a marker names (as many as a
// signed tree may hold besides its app, sign.DefaultMaxDependencies).
const MaxDepends = 1000

// maxObject bounds the size a marker may state (1 TiB).
const maxObject = 1 << 40

// Marker says an image and its signature are complete in the store.
type Marker struct {
	Format  int    `json:"nix2aci-marker"`
	ImageID string `json:"imageID"`
	ACI     Part   `json:"aci"`
	ASC     Part   `json:"asc"`
	// Depends are the images it depends on (an app's layers), in the
	// same store: each is complete before this marker is written, and an
	// image is served only while they are still there.
	Depends []Dep `json:"depends,omitempty"`
}

// Dep is an image a marker's image depends on: its key and image ID.
type Dep struct {
	Key     string `json:"key"`
	ImageID string `json:"imageID"`
}

// Part is one object a marker names.
type Part struct {
	Key    string `json:"key"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

var (
	sha256RE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	imageIDRE = regexp.MustCompile(`^sha512-[0-9a-f]{64,128}$`)
)

// MarkerKey is the key of the marker of the image at key.
func MarkerKey(key string) string { return ".nix2aci/markers/" + key + ".json" }

// ParseMarker parses and checks a marker of the image at key: its
// format, and that it names key and key.asc with sizes and digests.
func ParseMarker(b []byte, key string) (*Marker, error) {
	if len(b) > MaxMarker {
		return nil, fmt.Errorf("the marker of %s is over %d bytes", key, MaxMarker)
	}
	var m Marker
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&m); err != nil {
		return nil, fmt.Errorf("the marker of %s is not a marker: %v", key, err)
	}
	if d.More() {
		return nil, fmt.Errorf("the marker of %s has bytes after its JSON", key)
	}
	if m.Format != 1 {
		return nil, fmt.Errorf("the marker of %s is of format %d, not 1", key, m.Format)
	}
	if !imageIDRE.MatchString(m.ImageID) {
		return nil, fmt.Errorf("the marker of %s has no image ID", key)
	}
	for _, p := range []struct {
		part Part
		key  string
	}{{m.ACI, key}, {m.ASC, key + ".asc"}} {
		if p.part.Key != p.key {
			return nil, fmt.Errorf("the marker of %s names %.100q, not %s", key, p.part.Key, p.key)
		}
		if p.part.Size <= 0 || p.part.Size > maxObject {
			return nil, fmt.Errorf("the marker of %s gives %s a size of %d", key, p.key, p.part.Size)
		}
		if !sha256RE.MatchString(p.part.SHA256) {
			return nil, fmt.Errorf("the marker of %s gives %s no SHA-256", key, p.key)
		}
	}
	if len(m.Depends) > MaxDepends {
		return nil, fmt.Errorf("the marker of %s names %d dependencies, over %d", key, len(m.Depends), MaxDepends)
	}
	seen := map[string]bool{key: true}
	for _, d := range m.Depends {
		if err := CheckKey(d.Key); err != nil {
			return nil, fmt.Errorf("the marker of %s names a dependency that is no key: %v", key, err)
		}
		if seen[d.Key] {
			return nil, fmt.Errorf("the marker of %s names %.100q twice, or as its own dependency", key, d.Key)
		}
		seen[d.Key] = true
		if !imageIDRE.MatchString(d.ImageID) {
			return nil, fmt.Errorf("the marker of %s gives its dependency %.100q no image ID", key, d.Key)
		}
	}
	return &m, nil
}

// WriteMarker writes the marker of an image after its two objects and
// after the markers of the images it depends on.
func WriteMarker(ctx context.Context, st Store, imageID string, aci, asc Object, depends []Dep) error {
	m := Marker{Format: 1, ImageID: imageID,
		ACI:     Part{Key: aci.Key, Size: aci.Size, SHA256: aci.SHA256},
		ASC:     Part{Key: asc.Key, Size: asc.Size, SHA256: asc.SHA256},
		Depends: depends}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if _, err := ParseMarker(b, aci.Key); err != nil {
		return fmt.Errorf("writing the marker: %w", err)
	}
	_, err = st.Put(ctx, MarkerKey(aci.Key), b, "application/json", Cond{})
	return err
}

// IncompleteError is a marker there that does not prove its image.
type IncompleteError struct{ Msg string }

func (e *IncompleteError) Error() string { return e.Msg }

// Complete answers the marker of the image at key when the image is
// complete: the marker is there and valid, and both objects it names are
// there with its sizes and SHA-256 (as the store keeps them). It
// answers an error wrapping ErrNotExist when there is no marker, an
// *IncompleteError when the marker does not hold, other errors when the
// store could not be asked.
func Complete(ctx context.Context, st Store, key string) (*Marker, error) {
	b, _, err := st.Get(ctx, MarkerKey(key), MaxMarker)
	if err != nil {
		return nil, err
	}
	m, err := ParseMarker(b, key)
	if err != nil {
		return nil, &IncompleteError{err.Error()}
	}
	for _, p := range []Part{m.ACI, m.ASC} {
		o, err := st.Stat(ctx, p.Key)
		if errors.Is(err, ErrNotExist) {
			return nil, &IncompleteError{fmt.Sprintf("the marker of %s names %s, which is not in the store", key, p.Key)}
		}
		if err != nil {
			return nil, err
		}
		if o.Size != p.Size {
			return nil, &IncompleteError{fmt.Sprintf("%s has %d bytes in the store, its marker says %d", p.Key, o.Size, p.Size)}
		}
		if o.SHA256 != p.SHA256 {
			return nil, &IncompleteError{fmt.Sprintf("%s has the SHA-256 %q in the store, its marker says %s", p.Key, o.SHA256, p.SHA256)}
		}
	}
	return m, nil
}
