package ipam

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// bbolt's on-disk format (go.etcd.io/bbolt/internal/common), as far as CheckFile reads it.
const (
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	boltPageHeader   = 16 // id u64, flags u16, count u16, overflow u32
	boltMetaSize     = 64 // magic, version, pageSize, flags u32; root, sequence, freelist, pgid, txid, checksum u64
	boltFreelistFlag = 0x10
	boltNoFreelist   = ^uint64(0)
)

// CheckFile checks, before bbolt maps it, what bbolt trusts when it opens a file and reads
// in ways no recover can catch or bound: the meta pages and the free list they point to. A
// free list whose count is garbage makes bbolt allocate and sort that many page ids (memory
// and time without bound) before anything else can look. A missing or empty file passes
// (bbolt creates it); one whose meta pages are both invalid fails with ErrCorrupt, as does
// a free list that is not a free list page, overruns the file or names pages outside it.
// Errors name the file.
func CheckFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	size := fi.Size()
	if size == 0 {
		return nil
	}
	type meta struct{ pageSize, root, freelist, hwm, txid uint64 }
	readMeta := func(off int64) (meta, bool) {
		b := make([]byte, boltMetaSize)
		if _, err := f.ReadAt(b, off+boltPageHeader); err != nil {
			return meta{}, false
		}
		le := binary.LittleEndian
		h := fnv.New64a()
		h.Write(b[:56])
		if le.Uint32(b[0:]) != boltMagic || le.Uint32(b[4:]) != boltVersion || le.Uint64(b[56:]) != h.Sum64() {
			return meta{}, false
		}
		return meta{pageSize: uint64(le.Uint32(b[8:])), root: le.Uint64(b[16:]), freelist: le.Uint64(b[32:]), hwm: le.Uint64(b[40:]), txid: le.Uint64(b[48:])}, true
	}
	m0, ok0 := readMeta(0)
	var m1 meta
	ok1 := false
	for _, ps := range []uint64{m0.pageSize, uint64(os.Getpagesize()), 4096} {
		if ps >= 1024 && ps <= 1<<16 {
			if m1, ok1 = readMeta(int64(ps)); ok1 {
				break
			}
		}
	}
	var m meta
	switch {
	case ok0 && ok1 && m1.txid > m0.txid, ok1 && !ok0:
		m = m1
	case ok0:
		m = m0
	default:
		return damaged(path, errors.New("no valid meta page"))
	}
	ps := m.pageSize
	if ps < 1024 || ps > 1<<16 || m.hwm < 2 {
		return damaged(path, fmt.Errorf("meta page: page size %d, high water mark %d", ps, m.hwm))
	}
	pages := uint64(size) / ps
	reachable, err := checkTree(f, size, ps, min(m.hwm, pages), m.root)
	if err != nil {
		return damaged(path, err)
	}
	if m.freelist == boltNoFreelist {
		return nil
	}
	if m.freelist < 2 || m.freelist >= m.hwm || m.freelist >= pages {
		return damaged(path, fmt.Errorf("free list page %d outside the file's %d pages", m.freelist, min(m.hwm, pages)))
	}
	hdr := make([]byte, boltPageHeader+8)
	if _, err := f.ReadAt(hdr, int64(m.freelist*ps)); err != nil && !errors.Is(err, io.EOF) {
		return damaged(path, fmt.Errorf("free list page %d: %w", m.freelist, err))
	}
	le := binary.LittleEndian
	flags, count, overflow := le.Uint16(hdr[8:]), uint64(le.Uint16(hdr[10:])), uint64(le.Uint32(hdr[12:]))
	if flags != boltFreelistFlag || le.Uint64(hdr[0:]) != m.freelist {
		return damaged(path, fmt.Errorf("free list page %d: not a free list page (flags %#x, id %d)", m.freelist, flags, le.Uint64(hdr[0:])))
	}
	start := uint64(boltPageHeader)
	if count == 0xFFFF {
		count, start = le.Uint64(hdr[boltPageHeader:]), boltPageHeader+8
	}
	span := (overflow + 1) * ps
	if m.freelist+overflow >= pages || count > (span-start)/8 {
		return damaged(path, fmt.Errorf("free list page %d: %d ids in %d pages overrun it or the file", m.freelist, count, overflow+1))
	}
	ids := make([]byte, count*8)
	if _, err := f.ReadAt(ids, int64(m.freelist*ps+start)); err != nil {
		return damaged(path, fmt.Errorf("free list page %d: %w", m.freelist, err))
	}
	for i := uint64(0); i < count; i++ {
		id := le.Uint64(ids[i*8:])
		if id < 2 || id >= m.hwm {
			return damaged(path, fmt.Errorf("free list page %d: free page %d outside 2..%d", m.freelist, id, m.hwm-1))
		}
		if reachable[id] {
			return damaged(path, fmt.Errorf("free list page %d: page %d is free and in use", m.freelist, id))
		}
	}
	return nil
}

func damaged(path string, err error) error {
	return fmt.Errorf("%s is damaged (%w): %w", path, err, ErrCorrupt)
}

// maxCheckedFile bounds the file checkTree reads into memory (the agent's stores are far
// smaller); a larger file's tree is left to bbolt.
const maxCheckedFile = 256 << 20

// checkTree walks the B+tree of buckets from the root bucket's page as bbolt would, and
// checks what bbolt trusts without bounds: every page referenced once (a cycle makes
// bbolt's cursor descend forever, allocating), inside the file and below the high water
// mark, naming itself, of the type its place calls for, and every element inside its page.
// It returns the pages in use.
func checkTree(f *os.File, size int64, ps, hwm, root uint64) (map[uint64]bool, error) {
	seen := map[uint64]bool{}
	if size > maxCheckedFile {
		return seen, nil
	}
	data := make([]byte, size)
	if _, err := f.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	le := binary.LittleEndian
	var visit func(id uint64, depth int) error
	// elems checks a page's elements (in b, the page's bytes) and visits the child pages.
	elems := func(b []byte, id uint64, flags uint16, count int, depth int, inline bool) error {
		for i := range count {
			e := boltPageHeader + i*16
			if e+16 > len(b) {
				return fmt.Errorf("page %d: element %d outside the page", id, i)
			}
			switch flags {
			case 0x01: // branch
				pos, ksize := uint64(le.Uint32(b[e:])), uint64(le.Uint32(b[e+4:]))
				if uint64(e)+pos+ksize > uint64(len(b)) {
					return fmt.Errorf("page %d: key %d outside the page", id, i)
				}
				if err := visit(le.Uint64(b[e+8:]), depth+1); err != nil {
					return err
				}
			case 0x02: // leaf
				fl, pos, ksize, vsize := le.Uint32(b[e:]), uint64(le.Uint32(b[e+4:])), uint64(le.Uint32(b[e+8:])), uint64(le.Uint32(b[e+12:]))
				end := uint64(e) + pos + ksize + vsize
				if end > uint64(len(b)) {
					return fmt.Errorf("page %d: element %d outside the page", id, i)
				}
				if fl&0x01 == 0 { // a value
					continue
				}
				if inline {
					return fmt.Errorf("page %d: a bucket inside an inline bucket", id)
				}
				v := b[end-vsize : end]
				if len(v) < 16 {
					return fmt.Errorf("page %d: bucket %d: value of %d bytes", id, i, len(v))
				}
				if r := le.Uint64(v); r != 0 {
					if err := visit(r, depth+1); err != nil {
						return err
					}
					continue
				}
				// An inline bucket: a leaf page inside the value.
				ip := v[16:]
				if len(ip) < boltPageHeader || le.Uint16(ip[8:]) != 0x02 {
					return fmt.Errorf("page %d: inline bucket %d is not a leaf page", id, i)
				}
				if err := elemsLeaf(ip, id, int(le.Uint16(ip[10:]))); err != nil {
					return err
				}
			}
		}
		return nil
	}
	elemsLeaf = func(b []byte, id uint64, count int) error { return elems(b, id, 0x02, count, 0, true) }
	visit = func(id uint64, depth int) error {
		if depth > 64 {
			return fmt.Errorf("page %d: tree deeper than 64", id)
		}
		if id < 2 || id >= hwm {
			return fmt.Errorf("page %d: outside 2..%d", id, hwm-1)
		}
		p := data[id*ps:]
		if got := le.Uint64(p); got != id {
			return fmt.Errorf("page %d: names itself %d", id, got)
		}
		flags, count, overflow := le.Uint16(p[8:]), int(le.Uint16(p[10:])), uint64(le.Uint32(p[12:]))
		if id+overflow >= hwm {
			return fmt.Errorf("page %d: %d overflow pages outside 2..%d", id, overflow, hwm-1)
		}
		for o := id; o <= id+overflow; o++ {
			if seen[o] {
				return fmt.Errorf("page %d: referenced twice", o)
			}
			seen[o] = true
		}
		if flags != 0x01 && flags != 0x02 {
			return fmt.Errorf("page %d: type %#x where a branch or leaf page belongs", id, flags)
		}
		return elems(data[id*ps:(id+1+overflow)*ps], id, flags, count, depth, false)
	}
	if err := visit(root, 0); err != nil {
		return nil, err
	}
	return seen, nil
}

var elemsLeaf func(b []byte, id uint64, count int) error
