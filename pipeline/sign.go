package pipeline

import (
	"bytes"
	"context"
	"crypto/sha512"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/sign"
)

// Signer signs the image at path into the detached signature asc.
type Signer struct {
	// Fingerprint names the key, so that a signature made with another key
	// is never taken for one made with this one.
	Fingerprint string
	Sign        func(ctx context.Context, path, asc string) error
}

// KeySigner signs with key (see SignImage).
func KeySigner(key *openpgp.Entity) *Signer {
	return &Signer{
		Fingerprint: sign.Fingerprint(key),
		Sign: func(ctx context.Context, path, asc string) error {
			_, err := SignImage(ctx, key, path, asc)
			return err
		},
	}
}

// OpenImage opens an image file: a regular file only, without blocking on
// a FIFO; anything else is an *aci.InvalidError.
func OpenImage(path string) (*os.File, error) {
	f, err := safeio.OpenRegular(path)
	var nr *safeio.NotRegularError
	if errors.As(err, &nr) {
		return nil, &aci.InvalidError{Reason: err.Error() + "; give the path of an .aci file"}
	}
	return f, err
}

// SignImage signs the ACI at path with key into asc, written atomically,
// and returns what aci.Inspect found in it. It signs only a valid ACI, and
// only the bytes it validated: the file is read twice, and a file that
// changed between the two reads is not signed.
func SignImage(ctx context.Context, key *openpgp.Entity, path, asc string) (*aci.Info, error) {
	f, err := OpenImage(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	validated, signed := sha512.New(), sha512.New()
	info, err := aci.Inspect(io.TeeReader(safeio.WithContext(ctx, f), validated))
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("signing %s interrupted; nothing was written: %w", path, context.Cause(ctx))
		}
		return nil, fmt.Errorf("inspecting %s: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	var sig bytes.Buffer
	err = sign.Detached(&sig, key, io.TeeReader(safeio.WithContext(ctx, f), signed), sign.WithImage(info.Manifest.Name.String(), info.ImageID))
	if ctx.Err() != nil {
		return nil, fmt.Errorf("signing %s interrupted; nothing was written: %w", path, context.Cause(ctx))
	}
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(validated.Sum(nil), signed.Sum(nil)) {
		return nil, fmt.Errorf("%s changed while it was being signed; nothing was written: sign it again once nothing writes to it", path)
	}
	if err := safeio.WriteFileAtomic(asc, sig.Bytes(), 0o644); err != nil {
		return nil, fmt.Errorf("writing %s: %w", asc, err)
	}
	return info, nil
}
