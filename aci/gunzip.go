package aci

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/pgzip"
)

// Every gzip member Write produces says how long it is, in an extra field
// of its header (RFC 1952 FEXTRA, subfield "N2", 4 bytes little endian: the
// member's whole length), as BGZF does. Other readers skip the field; ours
// uses it to find where each member ends without inflating it, and so
// inflates members on every core.
var memberExtra = []byte{'N', '2', 4, 0, 0, 0, 0, 0}

const (
	lengthOffset = 16 // 10-byte header, 2-byte XLEN, 4-byte subfield header
	maxMember    = 8 << 20
)

// patchMemberLength writes a finished member's length into its header.
func patchMemberLength(member []byte) {
	binary.LittleEndian.PutUint32(member[lengthOffset:], uint32(len(member)))
}

// memberLength returns the length a member header announces, or 0.
func memberLength(h []byte) int {
	if len(h) < lengthOffset+4 || h[0] != 0x1f || h[1] != 0x8b || h[2] != 8 || h[3]&0x04 == 0 {
		return 0
	}
	if binary.LittleEndian.Uint16(h[10:]) < 8 || h[12] != 'N' || h[13] != '2' || binary.LittleEndian.Uint16(h[14:]) != 4 {
		return 0
	}
	n := int(binary.LittleEndian.Uint32(h[lengthOffset:]))
	if n < lengthOffset+4+8 || n > maxMember {
		return 0
	}
	return n
}

// gunzip returns the uncompressed stream of r. Members that announce
// their length are inflated in parallel, in order; from the first member
// that does not, the rest is read sequentially.
func gunzip(r *bufio.Reader) (io.ReadCloser, error) {
	h, _ := r.Peek(lengthOffset + 4)
	if memberLength(h) == 0 {
		return pgzip.NewReader(r)
	}
	p := &parallelGunzip{futures: make(chan *member, 2*runtime.GOMAXPROCS(0)+2), stop: make(chan struct{})}
	go p.dispatch(r)
	return p, nil
}

type member struct {
	data []byte // compressed, then uncompressed
	err  error
	rest io.Reader // the sequential remainder, instead of data
	done chan struct{}
}

type parallelGunzip struct {
	futures chan *member
	stop    chan struct{}
	once    sync.Once
	cur     []byte
	rest    io.Reader
	err     error
}

func (p *parallelGunzip) dispatch(r *bufio.Reader) {
	defer close(p.futures)
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for {
		h, _ := r.Peek(lengthOffset + 4)
		if len(h) == 0 {
			return
		}
		n := memberLength(h)
		m := &member{done: make(chan struct{})}
		if n == 0 {
			zr, err := gzip.NewReader(r)
			m.rest, m.err = zr, err
			close(m.done)
			p.send(m)
			return
		}
		m.data = make([]byte, n)
		if _, err := io.ReadFull(r, m.data); err != nil {
			m.err = errors.New("truncated gzip member")
			close(m.done)
			p.send(m)
			return
		}
		select {
		case sem <- struct{}{}:
		case <-p.stop:
			return
		}
		go func() {
			defer func() { <-sem; close(m.done) }()
			m.data, m.err = inflate(m.data)
		}()
		if !p.send(m) {
			return
		}
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

// inflate decompresses one whole member, checking its CRC and length.
func inflate(c []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(c))
	if err != nil {
		return nil, err
	}
	zr.Multistream(false)
	size := binary.LittleEndian.Uint32(c[len(c)-4:])
	out := bytes.NewBuffer(make([]byte, 0, min(int(size), maxMember)))
	if _, err := io.Copy(out, zr); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func (p *parallelGunzip) Read(b []byte) (int, error) {
	for len(p.cur) == 0 {
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
			p.cur = m.data
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
