package vale

// Slot flags the switch interprets, with netmap.h's values.
const (
	// FlagNoLearn is NS_NO_LEARN: do not learn the source MAC of this frame.
	FlagNoLearn uint16 = 0x0008
	// FlagMoreFrag is NS_MOREFRAG: the frame continues in the next slot.
	FlagMoreFrag uint16 = 0x0020
)
