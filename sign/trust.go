package sign

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/appc/spec/schema/types"

	"github.com/nix2aci/nix2aci/internal/safeio"
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

// Keys returns every key of t, whatever it is trusted for: the keys a
// signature is checked with before TrustedFor judges its signer for the
// image's name (container signatures, package ocisign).
func (t *Trust) Keys() openpgp.EntityList { return t.keyring() }

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

// PrefixError reports a prefix that is not exactly an AC Identifier.
type PrefixError struct{ Prefix string }

func (e *PrefixError) Error() string {
	return fmt.Sprintf("prefix %s is not an AC Identifier (lower-case letters, digits and -._~, components joined by single /, no \"..\", no trailing /)", safeio.QuoteAlways(e.Prefix))
}

// checkPrefix checks a prefix against the whole AC Identifier grammar, as
// written: appc's NewACIdentifier checks only characters and ends, and
// would let "a/../../x" (a path out of the trust store) or "a//b" through.
func checkPrefix(prefix string) error {
	if !types.ValidACIdentifier.MatchString(prefix) {
		return &PrefixError{Prefix: prefix}
	}
	return nil
}

// maxTrustedKey bounds a trust store file: one armored public key.
const maxTrustedKey = 1 << 20

// LoadTrustDir reads a trust store in rkt's layout (see the package doc).
// Every entry must be what the layout says: directories, and regular
// files of at most 1 MiB named by their key's fingerprint; a symlink, a
// FIFO, a device, a file or directory anyone may write, or a prefix
// directory that is not an AC Identifier makes the store unreadable.
func LoadTrustDir(dir string) (*Trust, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("trust store %s does not exist: fill it with nix2aci trust --prefix PREFIX KEY.asc --trust-dir %s", safeio.Quote(dir), safeio.Quote(dir))
	}
	if err != nil {
		return nil, fmt.Errorf("reading trust store: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("trust store %s is not a directory", safeio.Quote(dir))
	}
	t := NewTrust()
	found := false
	for _, sub := range []string{"root.d", "prefix.d"} {
		top := filepath.Join(dir, sub)
		err := filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			found = true
			info, err := d.Info()
			if err != nil {
				return err
			}
			switch {
			case info.Mode()&fs.ModeSymlink != 0:
				return fmt.Errorf("trust store: %s is a symlink; trusted keys must be files in the store itself", safeio.Quote(p))
			case info.Mode().Perm()&0o002 != 0:
				return fmt.Errorf("trust store: %s can be written by anyone, who could add a key; chmod o-w it", safeio.Quote(p))
			case d.IsDir():
				return nil
			case !info.Mode().IsRegular():
				return fmt.Errorf("trust store: %s is not a regular file", safeio.Quote(p))
			}
			key, err := loadTrustedKey(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(top, filepath.Dir(p))
			prefix := filepath.ToSlash(rel)
			switch {
			case sub == "root.d" && prefix == ".":
				t.AddRoot(key)
			case sub == "prefix.d" && prefix != "." && checkPrefix(prefix) == nil:
				t.AddPrefix(prefix, key)
			default:
				return fmt.Errorf("trust store: %s is not at root.d/<fingerprint> or prefix.d/<AC Identifier>/<fingerprint>", safeio.Quote(p))
			}
			return nil
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	if !found {
		return nil, fmt.Errorf("%s is not a trust store: it has neither root.d nor prefix.d (fill one with nix2aci trust)", safeio.Quote(dir))
	}
	return t, nil
}

// loadTrustedKey reads one trust store file, which must be named by the
// fingerprint of the key it holds.
func loadTrustedKey(p string) (*openpgp.Entity, error) {
	data, err := safeio.ReadFile(p, maxTrustedKey)
	if err != nil {
		return nil, fmt.Errorf("trust store: %w", err)
	}
	key, err := ReadKey(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("trust store: %s: %w", safeio.Quote(p), err)
	}
	if fp := Fingerprint(key); fp != filepath.Base(p) {
		return nil, fmt.Errorf("trust store: %s holds key %s; a trusted key's file must be named by its lowercase fingerprint (rkt rejects this file too)", safeio.Quote(p), fp)
	}
	return key, nil
}

// WriteTrust adds key to the trust store dir, for every name (root) or for
// prefix, and returns the file written. Writing a key already there is a
// no-op. A prefix that is not exactly an AC Identifier is a *PrefixError;
// every write is confined to dir (os.Root), so no prefix can lead out.
func WriteTrust(dir, prefix string, root bool, key *openpgp.Entity) (string, error) {
	var sub string
	switch {
	case root && prefix != "":
		return "", errors.New("trust a key either for every name (--root) or for a prefix (--prefix), not both")
	case root:
		sub = "root.d"
	case prefix == "":
		return "", errors.New("say what the key is trusted for: --prefix example.com/app, or --root for every name")
	default:
		if err := checkPrefix(prefix); err != nil {
			return "", err
		}
		sub = "prefix.d/" + prefix
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating trust store: %w", err)
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return "", fmt.Errorf("opening trust store: %w", err)
	}
	defer r.Close()
	if err := r.MkdirAll(sub, 0o755); err != nil {
		return "", fmt.Errorf("creating trust store: %w", err)
	}
	var pub bytes.Buffer
	if err := WritePublicKey(&pub, key); err != nil {
		return "", err
	}
	name := sub + "/" + Fingerprint(key)
	tmp := fmt.Sprintf("%s/.%s.tmp-%d-%d", sub, Fingerprint(key), os.Getpid(), rand.Uint32())
	f, err := r.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return "", fmt.Errorf("writing trust store: %w", err)
	}
	_, err = f.Write(pub.Bytes())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = r.Rename(tmp, name)
	}
	if err != nil {
		r.Remove(tmp)
		return "", fmt.Errorf("writing trust store: %w", err)
	}
	return filepath.Join(dir, filepath.FromSlash(name)), nil
}
