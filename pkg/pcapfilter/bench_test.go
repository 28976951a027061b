package pcapfilter

import "testing"

// BenchmarkMatch measures Match on the packet path; allocs/op must stay 0.
// Reproduce with: go test -run=^$ -bench=Match -benchmem ./pkg/pcapfilter/
func BenchmarkMatch(b *testing.B) {
	frames := map[string][]byte{}
	for _, fr := range testFrames(b) {
		frames[fr.name] = fr.bytes
	}
	for _, bc := range []struct{ name, expr, frame string }{
		{"tcp_port_80_and_host", "tcp port 80 and host 10.0.0.1", "tcp4"},
		{"miss_on_ipv6", "tcp port 80 and host 10.0.0.1", "tcp6"},
		{"abbreviated_hosts", "host 10.0.0.7 or 10.0.0.8 or 10.0.0.9 or 10.0.0.2", "tcp4"},
		{"net6_and_portrange", "net 2001:db8::/32 and portrange 400-500 and not vlan", "tcp6"},
	} {
		f, err := Compile(bc.expr)
		if err != nil {
			b.Fatal(err)
		}
		frame := frames[bc.frame]
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				f.Match(frame)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pps")
		})
	}
}
