package controller

import (
	"maps"
	"net/netip"
	"slices"
	"sync"
)

// nodeStatus is what the reconcilers learned, read by the status writer
// and the CNI config gate. All methods are safe for concurrent use.
type nodeStatus struct {
	mu         sync.Mutex
	cidrs      []netip.Prefix
	cidrErr    string
	switches   map[string]int64  // applied switch → VirtualSwitch generation
	switchErrs map[string]string // switch → last apply error
	policyErrs map[string]string // pod → last apply error
	cniConf    bool
	cniErr     string
	cniNets    []string      // secondary switches whose conflist is in place
	cniNetsErr string        // why some secondary conflist is not
	changed    chan struct{} // signalled (non-blocking) on every change: status writer
	cniWake    chan struct{} // the same, for the CNI config writer
}

func newNodeStatus() *nodeStatus {
	return &nodeStatus{
		switches:   map[string]int64{},
		switchErrs: map[string]string{},
		policyErrs: map[string]string{},
		changed:    make(chan struct{}, 1),
		cniWake:    make(chan struct{}, 1),
	}
}

func (s *nodeStatus) notify() {
	for _, c := range []chan struct{}{s.changed, s.cniWake} {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

func (s *nodeStatus) setCIDRs(c []netip.Prefix, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if slices.Equal(s.cidrs, c) && s.cidrErr == msg {
		return
	}
	s.cidrs, s.cidrErr = slices.Clone(c), msg
	s.notify()
}

func (s *nodeStatus) setSwitch(name string, gen int64, applied bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if applied {
		s.switches[name] = gen
	} else {
		delete(s.switches, name)
	}
	if err != nil {
		s.switchErrs[name] = err.Error()
	} else {
		delete(s.switchErrs, name)
	}
	s.notify()
}

func (s *nodeStatus) setPolicyErr(pod string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, had := s.policyErrs[pod]
	if err != nil {
		s.policyErrs[pod] = err.Error()
	} else if had {
		delete(s.policyErrs, pod)
	} else {
		return
	}
	s.notify()
}

func (s *nodeStatus) setCNIConf(written bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if s.cniConf == written && s.cniErr == msg {
		return
	}
	s.cniConf, s.cniErr = written, msg
	s.notify()
}

// setCNINetworks records the secondary switches whose conflist the CNI
// config writer keeps in place and what failed (""), after each pass.
func (s *nodeStatus) setCNINetworks(nets []string, errMsg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.Equal(s.cniNets, nets) && s.cniNetsErr == errMsg {
		return
	}
	s.cniNets, s.cniNetsErr = slices.Clone(nets), errMsg
	s.notify()
}

// appliedSwitches lists the switches applied on this node, sorted.
func (s *nodeStatus) appliedSwitches() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.switches))
}

func (s *nodeStatus) switchApplied(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.switches[name]
	return ok
}

func (s *nodeStatus) hasCIDRs() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.cidrs) > 0
}

// view is a consistent copy for the status writer.
type statusView struct {
	cidrs      []netip.Prefix
	cidrErr    string
	switches   map[string]int64
	switchErrs map[string]string
	policyErrs map[string]string
	cniConf    bool
	cniErr     string
	cniNets    []string
	cniNetsErr string
}

func (s *nodeStatus) view() statusView {
	s.mu.Lock()
	defer s.mu.Unlock()
	return statusView{
		cidrs:      slices.Clone(s.cidrs),
		cidrErr:    s.cidrErr,
		switches:   maps.Clone(s.switches),
		switchErrs: maps.Clone(s.switchErrs),
		policyErrs: maps.Clone(s.policyErrs),
		cniConf:    s.cniConf,
		cniErr:     s.cniErr,
		cniNets:    slices.Clone(s.cniNets),
		cniNetsErr: s.cniNetsErr,
	}
}
