package fragcache

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
)

// TagRecord returns an HMAC-SHA256 under the cache's key over what (the
// kind of record, e.g. "layer index", with whatever version its truth
// depends on, such as the archive format that made the images it
// describes) and msg; ok is false when the cache has no key. A record
// kept beside the images it describes (the layer index in an output
// directory) carries such a tag, so that a later build believes only
// records its key's holder wrote. The tag's message never begins as a
// cache member's does, so neither can stand for the other.
func (c *Cache) TagRecord(what string, msg []byte) (tag []byte, ok bool) {
	if c == nil || c.key == nil {
		return nil, false
	}
	m := hmac.New(sha256.New, c.key)
	io.WriteString(m, "nix2aci record 1\x00"+what+"\x00")
	m.Write(msg)
	return m.Sum(nil), true
}

// RecordTagged reports whether hexTag, as read from a record, is
// TagRecord(what, msg) in hex: false without a key, for a tag that is
// not hex, and for any other tag (compared in constant time).
func (c *Cache) RecordTagged(what string, msg []byte, hexTag string) bool {
	tag, ok := c.TagRecord(what, msg)
	got, err := hex.DecodeString(hexTag)
	return ok && err == nil && hmac.Equal(got, tag)
}
