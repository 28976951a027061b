package vale

import "github.com/epair-cni/epair/pkg/netmap"

// Slot flags the switch interprets (netmap.h values, from pkg/netmap).
const (
	// FlagNoLearn is NS_NO_LEARN: do not learn the source MAC of this frame.
	FlagNoLearn = netmap.NoLearn
	// FlagMoreFrag is NS_MOREFRAG: the frame continues in the next slot.
	FlagMoreFrag = netmap.MoreFrag
)
