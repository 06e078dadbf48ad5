package gzmember

import (
	"bufio"
	stdgzip "compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"sync"
)

// Every gzip member a Writer makes says how long it is, in an extra field
// of its header (RFC 1952 FEXTRA, subfield "N2", 4 bytes little endian: the
// member's whole length), as BGZF does. Other readers skip the field; ours
// uses it to find where each member ends without inflating it, and so
// inflates members on every core.
//
// The length is a claim made by the file, and the file may be hostile: a
// member whose claimed length also covers a second member would make a
// reader that trusts it skip bytes that every other reader (compress/gzip,
// GNU tar, rkt) reads. So the fast path proves each claim: the claimed
// bytes must be exactly one gzip member (header, deflate stream and
// trailer using every byte, CRC-32 and ISIZE matching), inflating to at
// most ChunkSize bytes, as every member a Writer makes does. A claim that is
// not proven fails the read. What the fast path produces is therefore
// exactly what compress/gzip reads from the same bytes, or an error;
// FuzzGunzipMatchesCompressGzip checks this against the standard library.
var memberExtra = []byte{'N', '2', 4, 0, 0, 0, 0, 0}

const (
	lengthOffset = 16 // 10-byte header, 2-byte XLEN, 4-byte subfield header
	// maxInflating and maxAhead bound the members held at once, whatever
	// the core count: at most maxAhead members of at most MaxMember
	// compressed and ChunkSize inflated bytes each.
	maxInflating = 8
	maxAhead     = 16
)

// patchMemberLength writes a finished member's length into its header.
func patchMemberLength(member []byte) {
	binary.LittleEndian.PutUint32(member[lengthOffset:], uint32(len(member)))
}

// memberLength returns the length a member header claims, or 0 when the
// header makes no claim (not our format).
func memberLength(h []byte) int {
	// Exactly a Writer's header: deflate, FEXTRA and no other flag (no name,
	// comment or header CRC that two parsers could treat differently).
	if len(h) < lengthOffset+4 || h[0] != 0x1f || h[1] != 0x8b || h[2] != 8 || h[3] != 0x04 {
		return 0
	}
	if binary.LittleEndian.Uint16(h[10:]) < 8 || h[12] != 'N' || h[13] != '2' || binary.LittleEndian.Uint16(h[14:]) != 4 {
		return 0
	}
	return int(binary.LittleEndian.Uint32(h[lengthOffset:]))
}

// MemberError reports a gzip member whose claimed length is not proven.
type MemberError struct {
	Offset int64
	Reason string
}

func (e *MemberError) Error() string {
	return fmt.Sprintf("gzip member at byte %d: %s", e.Offset, e.Reason)
}

// NewReader returns the uncompressed stream of r, exactly as compress/gzip
// reads it (all members, in order) or an error. Members that claim their
// length are inflated in parallel once proven; from the first member that
// makes no claim, compress/gzip itself reads the rest. Close the reader to
// stop inflating ahead.
func NewReader(r *bufio.Reader) (io.ReadCloser, error) {
	h, _ := r.Peek(lengthOffset + 4)
	if memberLength(h) == 0 {
		zr, err := stdgzip.NewReader(r)
		if err != nil {
			return nil, err
		}
		return zr, nil
	}
	workers := min(runtime.GOMAXPROCS(0), maxInflating)
	p := &parallelGunzip{futures: make(chan *member, maxAhead), stop: make(chan struct{})}
	go p.dispatch(r, workers)
	return p, nil
}

type member struct {
	data []byte // compressed, then uncompressed
	err  error
	rest io.Reader // the sequential remainder, instead of data
	done chan struct{}
}

// chunkBuffers recycles the inflated members' memory.
var chunkBuffers = sync.Pool{New: func() any { return make([]byte, ChunkSize) }}

type parallelGunzip struct {
	futures chan *member
	stop    chan struct{}
	once    sync.Once
	cur     []byte
	buf     []byte // the buffer cur is in, returned once read
	rest    io.Reader
	err     error
}

func (p *parallelGunzip) dispatch(r *bufio.Reader, workers int) {
	defer close(p.futures)
	sem := make(chan struct{}, workers)
	var off int64
	for {
		h, _ := r.Peek(lengthOffset + 4)
		if len(h) == 0 {
			return // end of file at a member boundary
		}
		n := memberLength(h)
		m := &member{done: make(chan struct{})}
		switch {
		case n == 0:
			// No claim: the reference reader reads the rest.
			zr, err := stdgzip.NewReader(r)
			m.rest, m.err = zr, err
			if err != nil {
				m.err = &MemberError{Offset: off, Reason: err.Error()}
			}
			close(m.done)
			p.send(m)
			return
		case n < lengthOffset+4+8 || n > MaxMember:
			m.err = &MemberError{Offset: off, Reason: fmt.Sprintf("claims a length of %d bytes, which no member of an ACI written by nix2aci has (at most %d)", n, MaxMember)}
			close(m.done)
			p.send(m)
			return
		}
		m.data = make([]byte, n)
		if _, err := io.ReadFull(r, m.data); err != nil {
			m.err = &MemberError{Offset: off, Reason: fmt.Sprintf("claims %d bytes but the file ends first (truncated)", n)}
			close(m.done)
			p.send(m)
			return
		}
		select {
		case sem <- struct{}{}:
		case <-p.stop:
			return
		}
		at := off
		go func() {
			defer func() { <-sem; close(m.done) }()
			m.data, m.err = inflateMember(m.data, chunkBuffers.Get().([]byte))
			if m.err != nil {
				m.err = &MemberError{Offset: at, Reason: m.err.Error()}
			}
		}()
		if !p.send(m) {
			return
		}
		off += int64(n)
	}
}

func (p *parallelGunzip) send(m *member) bool {
	select {
	case p.futures <- m:
		return true
	case <-p.stop:
		return false
	}
}

func (p *parallelGunzip) Read(b []byte) (int, error) {
	for len(p.cur) == 0 {
		if p.buf != nil {
			chunkBuffers.Put(p.buf[:cap(p.buf)])
			p.buf = nil
		}
		if p.err != nil {
			return 0, p.err
		}
		if p.rest != nil {
			return p.rest.Read(b)
		}
		m, ok := <-p.futures
		if !ok {
			p.err = io.EOF
			continue
		}
		<-m.done
		switch {
		case m.err != nil:
			p.err = m.err
		case m.rest != nil:
			p.rest = m.rest
		default:
			p.cur, p.buf = m.data, m.data
		}
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

// Close stops decompressing ahead.
func (p *parallelGunzip) Close() error {
	p.once.Do(func() { close(p.stop) })
	return nil
}
