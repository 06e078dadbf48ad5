package objstore

import (
	"context"
	"errors"
	"fmt"
)

// Errors a Store's operations answer with (wrapped).
var (
	// ErrNotExist: no object has the key.
	ErrNotExist = errors.New("no such object")
	// ErrPrecondition: a conditional write found the object other than
	// it asked (there already, or not with that ETag).
	ErrPrecondition = errors.New("precondition failed")
	// ErrNoURL: the store has no URL a client can fetch an object at.
	ErrNoURL = errors.New("the store has no URL for its objects")
)

// Object describes a stored object.
type Object struct {
	Key  string
	Size int64
	// ETag is the store's version tag of the object's bytes, what
	// Cond.IfMatch names.
	ETag string
	// SHA256 is the lower-case hex SHA-256 of the bytes, as the store
	// checked it at upload and keeps it ("" when the store keeps none).
	SHA256 string
}

// Cond makes a write conditional.
type Cond struct {
	// IfNoneMatch: write only if no object has the key.
	IfNoneMatch bool
	// IfMatch: write (or delete) only if the object's ETag is this one.
	IfMatch string
}

// Store holds objects by key ("/"-separated, no leading "/", no "."
// or ".." component). Objects are written whole: a reader sees an object's
// old bytes or its new ones, never part of them.
type Store interface {
	// Check answers whether the store is reachable and usable with the
	// credentials given, with an error that names the fix.
	Check(ctx context.Context) error
	// Get reads an object of at most max bytes (a larger one is an
	// error, not read).
	Get(ctx context.Context, key string, max int64) ([]byte, Object, error)
	// Stat describes an object.
	Stat(ctx context.Context, key string) (Object, error)
	// PutFile uploads the regular file path as key, with its SHA-256 for
	// the store to check.
	PutFile(ctx context.Context, key, path, contentType string) (Object, error)
	// Put writes b as key, under c.
	Put(ctx context.Context, key string, b []byte, contentType string, c Cond) (Object, error)
	// Delete removes key, under c (only IfMatch); a key not there is no
	// error.
	Delete(ctx context.Context, key string, c Cond) error
	// URL is where a client fetches key: a URL signed for a while, or
	// under a public base URL; ErrNoURL when there is none.
	URL(ctx context.Context, key string) (string, error)
	// String names the store for messages (e.g. s3://bucket at endpoint).
	String() string
}

// CheckKey refuses keys a Store does not take.
func CheckKey(key string) error {
	if key == "" || len(key) > 1024 {
		return fmt.Errorf("object key %.80q: empty or over 1024 bytes", key)
	}
	start := 0
	for i := 0; i <= len(key); i++ {
		if i == len(key) || key[i] == '/' {
			c := key[start:i]
			if c == "" || c == "." || c == ".." {
				return fmt.Errorf("object key %.80q has an empty, . or .. component", key)
			}
			start = i + 1
			continue
		}
		if key[i] < 0x21 || key[i] == 0x7f || key[i] == '\\' {
			return fmt.Errorf("object key %.80q has a space, control character or backslash", key)
		}
	}
	return nil
}
