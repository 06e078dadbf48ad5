package sign

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/appc/spec/schema/types"
)

// Trust says which keys are trusted for which image names.
type Trust struct {
	root     map[string]*openpgp.Entity
	prefixes map[string]map[string]*openpgp.Entity // prefix -> fingerprint -> key
}

// NewTrust returns an empty Trust.
func NewTrust() *Trust {
	return &Trust{root: map[string]*openpgp.Entity{}, prefixes: map[string]map[string]*openpgp.Entity{}}
}

// AddRoot trusts key for every image name.
func (t *Trust) AddRoot(key *openpgp.Entity) { t.root[Fingerprint(key)] = key }

// AddPrefix trusts key for prefix and every name below it.
func (t *Trust) AddPrefix(prefix string, key *openpgp.Entity) {
	if t.prefixes[prefix] == nil {
		t.prefixes[prefix] = map[string]*openpgp.Entity{}
	}
	t.prefixes[prefix][Fingerprint(key)] = key
}

// keyring holds every key of t, whatever it is trusted for.
func (t *Trust) keyring() openpgp.EntityList {
	seen := map[string]bool{}
	var out openpgp.EntityList
	add := func(m map[string]*openpgp.Entity) {
		for _, fp := range sortedFingerprints(m) {
			if !seen[fp] {
				seen[fp] = true
				out = append(out, m[fp])
			}
		}
	}
	add(t.root)
	for _, p := range t.sortedPrefixes() {
		add(t.prefixes[p])
	}
	return out
}

// TrustedFor says whether the key with fingerprint fp is trusted for image
// name, and as what: "root" or the prefix that matched.
func (t *Trust) TrustedFor(fp, name string) (string, bool) {
	if _, ok := t.root[fp]; ok {
		return "root", true
	}
	for _, p := range t.sortedPrefixes() {
		if _, ok := t.prefixes[p][fp]; ok && (name == p || strings.HasPrefix(name, p+"/")) {
			return p, true
		}
	}
	return "", false
}

// prefixesOf lists the prefixes the key fp is trusted for.
func (t *Trust) prefixesOf(fp string) []string {
	var out []string
	for _, p := range t.sortedPrefixes() {
		if _, ok := t.prefixes[p][fp]; ok {
			out = append(out, p)
		}
	}
	return out
}

func (t *Trust) sortedPrefixes() []string {
	ps := make([]string, 0, len(t.prefixes))
	for p := range t.prefixes {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

func sortedFingerprints(m map[string]*openpgp.Entity) []string {
	fps := make([]string, 0, len(m))
	for fp := range m {
		fps = append(fps, fp)
	}
	sort.Strings(fps)
	return fps
}

// LoadTrustDir reads a trust store in rkt's layout (see the package doc).
func LoadTrustDir(dir string) (*Trust, error) {
	t := NewTrust()
	found := false
	rootDir := filepath.Join(dir, "root.d")
	if ents, err := os.ReadDir(rootDir); err == nil {
		found = true
		for _, e := range ents {
			if e.IsDir() {
				continue
			}
			key, err := loadTrustedKey(filepath.Join(rootDir, e.Name()))
			if err != nil {
				return nil, err
			}
			t.AddRoot(key)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading trust store: %w", err)
	}
	prefixDir := filepath.Join(dir, "prefix.d")
	err := filepath.WalkDir(prefixDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		found = true
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(prefixDir, filepath.Dir(p))
		prefix := filepath.ToSlash(rel)
		if _, err := types.NewACIdentifier(prefix); err != nil || prefix == "." {
			return fmt.Errorf("trust store: %s is not under a valid prefix directory (prefix.d/<AC Identifier>/<fingerprint>)", p)
		}
		key, err := loadTrustedKey(p)
		if err != nil {
			return err
		}
		t.AddPrefix(prefix, key)
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("%s is not a trust store: it has neither root.d nor prefix.d (fill one with nix2aci trust)", dir)
	}
	return t, nil
}

// loadTrustedKey reads one trust store file, which must be named by the
// fingerprint of the key it holds.
func loadTrustedKey(p string) (*openpgp.Entity, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("trust store: %w", err)
	}
	key, err := ReadKey(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("trust store: %s: %w", p, err)
	}
	if fp := Fingerprint(key); fp != filepath.Base(p) {
		return nil, fmt.Errorf("trust store: %s holds key %s; a trusted key's file must be named by its lowercase fingerprint (rkt rejects this file too)", p, fp)
	}
	return key, nil
}

// WriteTrust adds key to the trust store dir, for every name (root) or for
// prefix, and returns the file written. Writing a key already there is a
// no-op.
func WriteTrust(dir, prefix string, root bool, key *openpgp.Entity) (string, error) {
	var sub string
	switch {
	case root && prefix != "":
		return "", errors.New("trust a key either for every name (--root) or for a prefix (--prefix), not both")
	case root:
		sub = filepath.Join(dir, "root.d")
	case prefix == "":
		return "", errors.New("say what the key is trusted for: --prefix example.com/app, or --root for every name")
	default:
		id, err := types.NewACIdentifier(prefix)
		if err != nil {
			return "", fmt.Errorf("prefix %q is not an AC Identifier (%s)", prefix, types.ValidACIdentifier)
		}
		sub = filepath.Join(dir, "prefix.d", filepath.FromSlash(id.String()))
	}
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return "", fmt.Errorf("creating trust store: %w", err)
	}
	path := filepath.Join(sub, Fingerprint(key))
	return path, writeAtomic(path, func(w io.Writer) error { return WritePublicKey(w, key) })
}
