package ifcore

import (
	"fmt"
	"syscall"
)

// IoctlCmd is an interface ioctl command.
type IoctlCmd int

// The commands of ifioctl that the Go API keeps.
const (
	SIOCIFCREATE IoctlCmd = iota + 1
	SIOCIFCREATE2
	SIOCIFDESTROY
	SIOCIFGCLONERS
	SIOCGIFINDEX
	SIOCGIFFLAGS
	SIOCSIFFLAGS
	SIOCGIFCAP
	SIOCSIFCAP
	SIOCGIFMETRIC
	SIOCSIFMETRIC
	SIOCGIFMTU
	SIOCSIFMTU
	SIOCGIFTSOLEN
	SIOCSIFTSOLEN
	SIOCGIFDATA
	SIOCGIFPOLLCPU
	SIOCSIFPOLLCPU
	SIOCSIFNAME
	SIOCADDMULTI
	SIOCDELMULTI
	SIOCSIFLLADDR
	SIOCSIFMEDIA
	SIOCGIFMEDIA
	SIOCSIFPHYS
	SIOCGIFPHYS
	SIOCSIFGENERIC
	SIOCGIFGENERIC
	SIOCAIFGROUP
	SIOCDIFGROUP
	SIOCGIFGROUP
	SIOCGIFGMEMB
)

// Cred is the caller's authority (priv_check_cred(PRIV_ROOT)): the agent
// maps peer credentials or RBAC onto it.
type Cred struct{ Privileged bool }

// Ifreq is the request/response union of Ioctl.
type Ifreq struct {
	Name    string
	Flags   uint32 // SIOC[GS]IFFLAGS: all 32 bits (ifr_flags|ifr_flagshigh<<16)
	Metric  int
	MTU     int
	TSOLen  int
	PollCPU int
	ReqCap  uint32
	CurCap  uint32
	Index   uint32
	NewName string   // SIOCSIFNAME
	Addr    Sockaddr // SIOC{ADD,DEL}MULTI
	Lladdr  []byte   // SIOCSIFLLADDR
	Data    IfData   // SIOCGIFDATA
	Group   string   // SIOC[AD]IFGROUP, SIOCGIFGMEMB
	Len     int      // SIOCGIFGROUP/SIOCGIFGMEMB: room (0 = size query); out: required
	Strings []string // group names, member names, cloner names
	Params  any      // SIOCIFCREATE2
	Phys    int
	Media   any // driver-defined
}

func needPriv(cred Cred, cmd IoctlCmd, name string) error {
	if !cred.Privileged {
		return fmt.Errorf("ioctl %d on %s: %w", cmd, name, syscall.EPERM)
	}
	return nil
}

// Ioctl is ifioctl with the seed's errno contract: cloner commands first,
// then ENXIO for an unknown interface, EPERM for an unprivileged "set",
// EOPNOTSUPP for what the driver does not implement.
func (n *Net) Ioctl(cred Cred, cmd IoctlCmd, r *Ifreq) error {
	switch cmd {
	case SIOCIFCREATE, SIOCIFCREATE2:
		if err := needPriv(cred, cmd, r.Name); err != nil {
			return err
		}
		var params any
		if cmd == SIOCIFCREATE2 {
			params = r.Params
		}
		name, err := n.CloneCreate(r.Name, params)
		if err == nil {
			r.Name = name
		}
		return err
	case SIOCIFDESTROY:
		if err := needPriv(cred, cmd, r.Name); err != nil {
			return err
		}
		return n.CloneDestroy(r.Name)
	case SIOCIFGCLONERS:
		r.Strings = n.CloneList()
		return nil
	}

	if err := n.lock("ioctl"); err != nil {
		return err
	}
	ifp, err := n.unitLocked(r.Name)
	if err != nil {
		n.mu.Unlock()
		return fmt.Errorf("ioctl %d: %w", cmd, err)
	}
	// Commands that need a service sync or another lock run unlocked.
	switch cmd {
	case SIOCSIFFLAGS:
		n.mu.Unlock()
		if err := needPriv(cred, cmd, r.Name); err != nil {
			return err
		}
		return n.setFlags(ifp, r.Flags)
	case SIOCSIFNAME:
		n.mu.Unlock()
		if err := needPriv(cred, cmd, r.Name); err != nil {
			return err
		}
		return n.rename(ifp, r.NewName)
	case SIOCAIFGROUP:
		n.mu.Unlock()
		if err := needPriv(cred, cmd, r.Name); err != nil {
			return err
		}
		return n.AddGroup(ifp, r.Group)
	case SIOCDIFGROUP:
		n.mu.Unlock()
		if err := needPriv(cred, cmd, r.Name); err != nil {
			return err
		}
		return n.DelGroup(ifp, r.Group)
	case SIOCGIFGROUP:
		n.mu.Unlock()
		var err error
		r.Strings, r.Len, err = n.Groups(ifp, r.Len)
		return err
	case SIOCGIFGMEMB:
		n.mu.Unlock()
		var err error
		r.Strings, r.Len, err = n.GroupMembers(r.Group, r.Len)
		return err
	case SIOCGIFDATA:
		n.mu.Unlock()
		r.Data = ifp.Stats()
		return nil
	}
	defer n.mu.Unlock()
	switch cmd {
	case SIOCGIFINDEX:
		r.Index = ifp.index
	case SIOCGIFFLAGS:
		r.Flags = ifp.Flags()
	case SIOCGIFCAP:
		r.ReqCap, r.CurCap = ifp.capabilities, ifp.capenable
	case SIOCGIFMETRIC:
		r.Metric = ifp.metric
	case SIOCGIFMTU:
		r.MTU = ifp.MTU()
	case SIOCGIFTSOLEN:
		r.TSOLen = ifp.tsolen
	case SIOCGIFPOLLCPU:
		r.PollCPU = -1
	case SIOCSIFPOLLCPU:
		return needPriv(cred, cmd, r.Name) // D-I6: privileged, then a no-op
	case SIOCSIFCAP:
		if err := needPriv(cred, cmd, r.Name); err != nil {
			return err
		}
		if r.ReqCap&^ifp.capabilities != 0 {
			return fmt.Errorf("set capabilities of %s: %#x not supported: %w", ifp.Name(), r.ReqCap&^ifp.capabilities, syscall.EINVAL)
		}
		handled, err := ifp.ioctlDriver(cmd, r)
		if !handled {
			return fmt.Errorf("set capabilities of %s: %w", ifp.Name(), syscall.EOPNOTSUPP) // D-I4: nil check
		}
		if err != nil {
			return fmt.Errorf("set capabilities of %s: driver: %w", ifp.Name(), err) // D-I4
		}
		ifp.capenable = r.ReqCap
		ifp.lastchange = n.clock.Now()
	case SIOCSIFMETRIC:
		if err := needPriv(cred, cmd, r.Name); err != nil {
			return err
		}
		ifp.metric = r.Metric
		ifp.lastchange = n.clock.Now()
	case SIOCSIFMTU:
		if err := needPriv(cred, cmd, r.Name); err != nil {
			return err
		}
		if _, ok := ifp.driver.(Ioctler); !ok {
			return fmt.Errorf("set MTU of %s: driver has no ioctl: %w", ifp.Name(), syscall.EOPNOTSUPP)
		}
		if r.MTU < IF_MINMTU || r.MTU > IF_MAXMTU {
			return fmt.Errorf("set MTU of %s: %d outside %d..%d: %w", ifp.Name(), r.MTU, IF_MINMTU, IF_MAXMTU, syscall.EINVAL)
		}
		if _, err := ifp.ioctlDriver(cmd, r); err != nil {
			return fmt.Errorf("set MTU of %s: driver: %w", ifp.Name(), err)
		}
		ifp.mtu.Store(int32(r.MTU))
		ifp.lastchange = n.clock.Now()
		n.emitIf(EvIfMsg, ifp)
	case SIOCSIFTSOLEN:
		if err := needPriv(cred, cmd, r.Name); err != nil {
			return err
		}
		if r.TSOLen <= 0 {
			return fmt.Errorf("set TSO length of %s: %d: %w", ifp.Name(), r.TSOLen, syscall.EINVAL)
		}
		ifp.tsolen = r.TSOLen
	case SIOCADDMULTI, SIOCDELMULTI:
		if err := needPriv(cred, cmd, r.Name); err != nil {
			return err
		}
		if ifp.Flags()&IFF_MULTICAST == 0 {
			return fmt.Errorf("change multicast membership of %s: not a multicast interface: %w", ifp.Name(), syscall.EOPNOTSUPP)
		}
		if r.Addr.Family != AF_LINK {
			return fmt.Errorf("change multicast membership of %s: family %d, want AF_LINK: %w", ifp.Name(), r.Addr.Family, syscall.EINVAL)
		}
		var err error
		if cmd == SIOCADDMULTI {
			_, err = ifp.addMultiLocked(r.Addr)
		} else {
			err = ifp.delMultiLocked(r.Addr)
		}
		if err != nil {
			return err
		}
		ifp.lastchange = n.clock.Now()
	case SIOCSIFLLADDR:
		if err := needPriv(cred, cmd, r.Name); err != nil {
			return err
		}
		return ifp.setLladdrLocked(r.Lladdr)
	case SIOCSIFMEDIA, SIOCSIFPHYS, SIOCSIFGENERIC:
		if err := needPriv(cred, cmd, r.Name); err != nil {
			return err
		}
		fallthrough
	case SIOCGIFMEDIA, SIOCGIFPHYS, SIOCGIFGENERIC:
		handled, err := ifp.ioctlDriver(cmd, r)
		if !handled {
			return fmt.Errorf("ioctl %d on %s: driver has no ioctl: %w", cmd, ifp.Name(), syscall.EOPNOTSUPP)
		}
		if err != nil {
			return err
		}
		if cmd == SIOCSIFMEDIA || cmd == SIOCSIFPHYS || cmd == SIOCSIFGENERIC {
			ifp.lastchange = n.clock.Now()
		}
	default:
		return fmt.Errorf("ioctl %d on %s: %w", cmd, ifp.Name(), syscall.EOPNOTSUPP)
	}
	return nil
}

// setFlags is SIOCSIFFLAGS after the privilege check.
func (n *Net) setFlags(ifp *Ifnet, nf uint32) error {
	cur := ifp.Flags()
	if cur&IFF_SMART == 0 {
		if cur&IFF_UP != 0 && nf&IFF_UP == 0 {
			if err := n.ifDown(ifp); err != nil {
				return fmt.Errorf("set flags of %s: %w", ifp.Name(), err)
			}
		} else if cur&IFF_UP == 0 && nf&IFF_UP != 0 {
			n.ifUp(ifp)
		}
	}
	if err := n.lock("set flags"); err != nil {
		return err
	}
	defer n.mu.Unlock()
	for {
		old := ifp.Flags()
		f := old&IFF_CANTCHANGE | nf&^IFF_CANTCHANGE
		if f&IFF_PPROMISC != 0 {
			f |= IFF_PROMISC
		} else if ifp.pcount == 0 {
			f &^= IFF_PROMISC
		}
		if cur&IFF_SMART != 0 {
			// IFF_SMART: the driver manages UP and routes itself.
			f = f&^IFF_UP | nf&IFF_UP
		}
		if ifp.flags.CompareAndSwap(old, f) {
			break
		}
	}
	if err := ifp.driverFlags(); err != nil {
		return fmt.Errorf("set flags of %s: driver: %w", ifp.Name(), err) // D-I4
	}
	ifp.lastchange = n.clock.Now()
	return nil
}

// SetFlags is SIOCSIFFLAGS for a trusted (agent) caller.
func (ifp *Ifnet) SetFlags(f uint32) error { return ifp.net.setFlags(ifp, f) }

// Up brings the interface up (SIOCSIFFLAGS with IFF_UP added).
func (ifp *Ifnet) Up() error { return ifp.SetFlags(ifp.Flags() | IFF_UP) }

// Down takes it down; the queues are purged and the workers synchronized.
func (ifp *Ifnet) Down() error { return ifp.SetFlags(ifp.Flags() &^ IFF_UP) }

// rename is SIOCSIFNAME: EINVAL for empty or too long (D-I5), EEXIST for a
// name in use; departure then arrival.
func (n *Net) rename(ifp *Ifnet, name string) error {
	if err := validIfName(name); err != nil {
		return fmt.Errorf("rename %s: %w", ifp.Name(), err)
	}
	if err := n.lock("rename interface"); err != nil {
		return err
	}
	if _, err := n.unitLocked(name); err == nil {
		n.mu.Unlock()
		return fmt.Errorf("rename %s to %s: %w", ifp.Name(), name, syscall.EEXIST)
	}
	n.mu.Unlock()
	n.emitIf(EvDetach, ifp)
	n.emitIf(EvDeparture, ifp)
	n.mu.Lock()
	nm := name
	ifp.name.Store(&nm)
	n.mu.Unlock()
	n.emitIf(EvAttach, ifp)
	n.emitIf(EvArrival, ifp)
	return nil
}
