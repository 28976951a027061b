package vale

// Port is one port of a switch.
type Port struct {
	sw    *Switch
	name  string
	idx   uint16
	stats counters
}
