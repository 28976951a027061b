package ifcore

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"syscall"
)

// IF_MAXUNIT is the largest unit a cloner hands out ([ext] 0x7fff).
const IF_MAXUNIT = 0x7fff

// Cloner is an if_clone: it recognizes names, creates interfaces and
// destroys them.
type Cloner interface {
	// Name is the cloner's name (if_dname of what it creates).
	Name() string
	// Match reports whether name is a create request for this cloner.
	Match(name string) bool
	// Create creates the interface(s) for name and returns their names; the
	// first is the name the request resolved to.
	Create(n *Net, name string, params any) ([]string, error)
	// Destroy destroys ifp (and whatever it is tied to).
	Destroy(n *Net, ifp *Ifnet) error
}

type clonerEntry struct {
	c   Cloner
	ifs []*Ifnet // the cloner's interface list
}

// AttachCloner is if_clone_attach.
func (n *Net) AttachCloner(c Cloner) error {
	if err := n.lock("attach cloner"); err != nil {
		return err
	}
	defer n.mu.Unlock()
	for _, e := range n.cloners {
		if e.c.Name() == c.Name() {
			return fmt.Errorf("attach cloner %s: %w", c.Name(), syscall.EEXIST)
		}
	}
	n.cloners = append(n.cloners, &clonerEntry{c: c})
	return nil
}

// DetachCloner is if_clone_detach: it destroys every interface the cloner
// made, then forgets it.
func (n *Net) DetachCloner(name string) error {
	n.mu.Lock()
	var e *clonerEntry
	for _, x := range n.cloners {
		if x.c.Name() == name {
			e = x
		}
	}
	n.mu.Unlock()
	if e == nil {
		return fmt.Errorf("detach cloner %s: %w", name, syscall.ENXIO)
	}
	for {
		n.mu.Lock()
		if len(e.ifs) == 0 {
			n.cloners = slices.DeleteFunc(n.cloners, func(x *clonerEntry) bool { return x == e })
			n.mu.Unlock()
			return nil
		}
		ifp := e.ifs[0]
		n.mu.Unlock()
		if err := n.CloneDestroy(ifp.Name()); err != nil {
			return fmt.Errorf("detach cloner %s: %w", name, err)
		}
	}
}

// CloneList is if_clone_list.
func (n *Net) CloneList() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, len(n.cloners))
	for i, e := range n.cloners {
		out[i] = e.c.Name()
	}
	return out
}

// ClonedInterfaces returns the names on a cloner's list.
func (n *Net) ClonedInterfaces(cloner string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, e := range n.cloners {
		if e.c.Name() == cloner {
			out := make([]string, len(e.ifs))
			for i, ifp := range e.ifs {
				out[i] = ifp.Name()
			}
			return out
		}
	}
	return nil
}

// CloneCreate is if_clone_create: the first cloner whose Match accepts
// name creates it. EEXIST if an interface already has that name, EINVAL
// if no cloner matches.
func (n *Net) CloneCreate(name string, params any) (string, error) {
	if err := n.lock("create interface"); err != nil {
		return "", err
	}
	if _, err := n.unitLocked(name); err == nil {
		n.mu.Unlock()
		return "", fmt.Errorf("create interface %s: %w", name, syscall.EEXIST)
	}
	var e *clonerEntry
	for _, x := range n.cloners {
		if x.c.Match(name) {
			e = x
			break
		}
	}
	n.mu.Unlock()
	if e == nil {
		return "", fmt.Errorf("create interface %s: no cloner matches: %w", name, syscall.EINVAL)
	}
	names, err := e.c.Create(n, name, params)
	if err != nil {
		return "", fmt.Errorf("create interface %s: %w", name, err)
	}
	n.mu.Lock()
	for _, nm := range names {
		if ifp, err := n.unitLocked(nm); err == nil {
			ifp.cloner = e
			e.ifs = append(e.ifs, ifp)
		}
	}
	n.mu.Unlock()
	return names[0], nil
}

// CloneDestroy is if_clone_destroy: ENXIO for an unknown interface,
// EINVAL if no cloner made it; the cloner decides what else goes.
func (n *Net) CloneDestroy(name string) error {
	if err := n.lock("destroy interface"); err != nil {
		return err
	}
	ifp, err := n.unitLocked(name)
	if err != nil {
		n.mu.Unlock()
		return fmt.Errorf("destroy interface: %w", err)
	}
	e := ifp.cloner
	n.mu.Unlock()
	if e == nil {
		return fmt.Errorf("destroy interface %s: not cloned: %w", name, syscall.EINVAL)
	}
	if err := e.c.Destroy(n, ifp); err != nil {
		return fmt.Errorf("destroy interface %s: %w", name, err)
	}
	return nil
}

// forgetCloned removes ifp from its cloner's list (called by cloners as
// they detach).
func (n *Net) forgetCloned(ifp *Ifnet) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if e := ifp.cloner; e != nil {
		e.ifs = slices.DeleteFunc(e.ifs, func(x *Ifnet) bool { return x == ifp })
	}
}

// Name2Unit is ifc_name2unit for base: no digits means -1 (wildcard); a
// leading zero before more digits, a non-digit after the digits, or a value
// above INT_MAX is EINVAL.
func Name2Unit(name, base string) (int, error) {
	if len(name) < len(base) || name[:len(base)] != base {
		return 0, fmt.Errorf("parse unit of %q: does not start with %q: %w", name, base, syscall.EINVAL)
	}
	s := name[len(base):]
	if s == "" {
		return -1, nil
	}
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i != len(s) {
		return 0, fmt.Errorf("parse unit of %q: trailing %q: %w", name, s[i:], syscall.EINVAL)
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("parse unit of %q: leading zero: %w", name, syscall.EINVAL)
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > math.MaxInt32 {
		return 0, fmt.Errorf("parse unit of %q: above %d: %w", name, math.MaxInt32, syscall.EINVAL)
	}
	return int(v), nil
}

// UnitAllocator is ifc_alloc_unit/ifc_free_unit: lowest free unit for a
// wildcard, ENOSPC beyond max, EEXIST for a unit in use.
type UnitAllocator struct {
	mu   sync.Mutex
	max  int
	used map[int]bool
}

// NewUnitAllocator returns an allocator for units 0..max.
func NewUnitAllocator(max int) *UnitAllocator { return &UnitAllocator{max: max, used: map[int]bool{}} }

// Alloc allocates unit (or the lowest free one when unit < 0).
func (a *UnitAllocator) Alloc(unit int) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if unit < 0 {
		for u := 0; u <= a.max; u++ {
			if !a.used[u] {
				a.used[u] = true
				return u, nil
			}
		}
		return 0, fmt.Errorf("allocate unit: all %d in use: %w", a.max+1, syscall.ENOSPC)
	}
	if unit > a.max {
		return 0, fmt.Errorf("allocate unit %d: above %d: %w", unit, a.max, syscall.ENOSPC)
	}
	if a.used[unit] {
		return 0, fmt.Errorf("allocate unit %d: %w", unit, syscall.EEXIST)
	}
	a.used[unit] = true
	return unit, nil
}

// Free releases unit.
func (a *UnitAllocator) Free(unit int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.used, unit)
}

// InUse returns the number of allocated units.
func (a *UnitAllocator) InUse() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.used)
}
