package ipam

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The crash child: open the store named by the environment, allocate, report each committed
// allocation on stdout, then die by SIGKILL without closing anything.
func TestMain(m *testing.M) {
	if path := os.Getenv("EPAIR_IPAM_CRASH_DB"); path != "" {
		crashChild(path)
		return
	}
	os.Exit(m.Run())
}

func crashChild(path string) {
	r, err := ParseRanges([]RangeConfig{{Subnet: "10.22.0.0/24"}, {Subnet: "fd00:22::/64"}})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	s, err := Open(path, r)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	w := bufio.NewWriter(os.Stdout)
	for i := range 30 {
		a, err := s.Allocate(own(i), nil)
		if err != nil {
			fmt.Fprintln(w, "error", err)
			break
		}
		b, _ := json.Marshal(a)
		fmt.Fprintf(w, "ok %s\n", b)
		w.Flush() // reported only after Allocate returned, i.e. after the fsync'd commit
	}
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// TestCrashedProcess kills a process holding the store open (no Close, no clean shutdown)
// and reopens its database: every allocation the process saw committed is there, once.
func TestCrashedProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.db")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "EPAIR_IPAM_CRASH_DB="+path)
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die by SIGKILL: %v\n%s", err, out)
	}
	want := map[Owner]Allocation{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		rest, ok := strings.CutPrefix(line, "ok ")
		if !ok {
			t.Fatalf("child: %s", line)
		}
		var a Allocation
		if err := json.Unmarshal([]byte(rest), &a); err != nil {
			t.Fatal(err)
		}
		want[a.Owner] = a
	}
	if len(want) != 30 {
		t.Fatalf("child committed %d allocations, want 30", len(want))
	}
	r := mustRanges(t, RangeConfig{Subnet: "10.22.0.0/24"}, RangeConfig{Subnet: "fd00:22::/64"})
	s := open(t, path, r) // the dead process's flock is gone with it
	defer s.Close()
	verify(t, s)
	got, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("after crash: %d allocations, want %d", len(got), len(want))
	}
	for _, a := range got {
		w := want[a.Owner]
		if len(a.Addrs) != 2 || a.Addrs[0] != w.Addrs[0] || a.Addrs[1] != w.Addrs[1] {
			t.Fatalf("after crash %+v, want %+v", a, w)
		}
	}
	// Allocation continues after the cursor, distinct from everything recovered.
	a, err := s.Allocate(own(30), nil)
	if err != nil || a.Addrs[0].Prefix.Addr().String() != "10.22.0.32" {
		t.Fatalf("next allocation %+v %v, want 10.22.0.32", a, err)
	}
	verify(t, s)
}
