package netmap

import (
	"fmt"
	"strings"
)

// BoundVar is nm_bound_var (004:614-637): dflt is first clamped into
// [lo, hi]; then v < lo becomes dflt ("bump") and v > hi becomes hi ("clamp").
// It returns the new value and whether it changed.
func BoundVar(v, dflt, lo, hi int) (int, bool) {
	if dflt < lo {
		dflt = lo
	}
	if dflt > hi {
		dflt = hi
	}
	switch {
	case v < lo:
		return dflt, true
	case v > hi:
		return hi, true
	}
	return v, false
}

// DumpBuf is nm_dump_buf (004:640-683) returning a string (D-N14: no static
// buffer). lim <= 0 or > len(p) dumps everything. Format: a header line, then
// rows of "%5d: ", 16 bytes as "hh " padded to 48 columns, the printable
// ASCII (0x20..0x7e, '.' otherwise) and a newline.
func DumpBuf(p []byte, lim int) string {
	if lim <= 0 || lim > len(p) {
		lim = len(p)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "buf 0x%p len %d lim %d\n", p, len(p), lim)
	for i := 0; i < lim; i += 16 {
		fmt.Fprintf(&sb, "%5d: ", i)
		end := min(i+16, lim)
		for j := i; j < end; j++ {
			fmt.Fprintf(&sb, "%02x ", p[j])
		}
		for j := end; j < i+16; j++ {
			sb.WriteString("   ")
		}
		for j := i; j < end; j++ {
			c := p[j]
			if c < 0x20 || c > 0x7e {
				c = '.'
			}
			sb.WriteByte(c)
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}
