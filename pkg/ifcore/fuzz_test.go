package ifcore

import (
	"errors"
	"strconv"
	"syscall"
	"testing"
)

// FuzzName2Unit checks ifc_name2unit against a direct reading of the rules:
// wildcard for the bare base, EINVAL for junk, a leading zero or overflow,
// and a round trip through strconv for everything accepted.
func FuzzName2Unit(f *testing.F) {
	for _, s := range []string{"epair", "epair0", "epair05", "epair2147483647", "epair2147483648", "epair0a", "epai", "epair-1", "epair99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		u, err := Name2Unit(name, "epair")
		if err != nil {
			if !errors.Is(err, syscall.EINVAL) {
				t.Fatalf("%q: error %v is not EINVAL", name, err)
			}
			return
		}
		if u == -1 {
			if name != "epair" {
				t.Fatalf("%q: wildcard for a non-bare name", name)
			}
			return
		}
		if u < 0 || name != "epair"+strconv.Itoa(u) {
			t.Fatalf("%q parsed as %d", name, u)
		}
	})
}

// FuzzEpairMatch checks that epair_clone_match accepts exactly the base
// followed by digits, and that whatever it accepts either parses or is
// EINVAL (never a panic).
func FuzzEpairMatch(f *testing.F) {
	for _, s := range []string{"epair", "epair0", "epair0a", "epairx", "", "epair\x00"} {
		f.Add(s)
	}
	e := &Epair{cfg: EpairConfig{Name: "epair"}}
	f.Fuzz(func(t *testing.T, name string) {
		m := e.Match(name)
		want := len(name) >= 5 && name[:5] == "epair"
		for i := 5; want && i < len(name); i++ {
			want = name[i] >= '0' && name[i] <= '9'
		}
		if m != want {
			t.Fatalf("Match(%q) = %v", name, m)
		}
		if m {
			if _, err := Name2Unit(name, "epair"); err != nil && !errors.Is(err, syscall.EINVAL) {
				t.Fatal(err)
			}
		}
	})
}
