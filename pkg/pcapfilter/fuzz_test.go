package pcapfilter

import (
	"errors"
	"strings"
	"testing"
)

// kitchenSink uses every kind of primitive, so that fuzzed frames are decoded and tested
// in full even when the fuzzed expression does not compile.
const kitchenSink = "(ether src 02:00:00:00:00:0a or broadcast or multicast or vlan 100) and " +
	"(net 10.0.0.0/8 or host 2001:db8::1 or arp dst host 10.0.0.1 or rarp) and " +
	"(portrange 1-1000 or sctp src port 2905 or icmp or icmp6 or ip6 proto 44 or not ip)"

// FuzzMatch fuzzes the expression and the frame together: Compile must not panic and
// must fail only with ErrSyntax; Match must not panic on any bytes; and the normalised
// String must compile to a filter that prints and matches the same.
func FuzzMatch(f *testing.F) {
	for _, fr := range testFrames(f) {
		for _, tc := range matchCases {
			if len(tc.want) > 0 && tc.want[0] == fr.name || tc.expr == "" {
				f.Add(tc.expr, fr.bytes)
			}
		}
		f.Add(kitchenSink, fr.bytes)
	}
	sink, err := Compile(kitchenSink)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, expr string, frame []byte) {
		flt, err := Compile(expr)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("Compile(%q): %v does not wrap ErrSyntax", expr, err)
			}
			sink.Match(frame)
			return
		}
		got := flt.Match(frame)
		again, err := Compile(flt.String())
		if err != nil {
			t.Fatalf("Compile(%q) = %q, which does not compile: %v", expr, flt, err)
		}
		if again.String() != flt.String() {
			t.Fatalf("Compile(%q): String %q recompiles as %q", expr, flt, again)
		}
		if again.Match(frame) != got {
			t.Fatalf("Compile(%q): %q and its recompilation disagree on %x", expr, flt, frame)
		}
	})
}

// FuzzCompile checks the errors: each is a *SyntaxError wrapping ErrSyntax whose offset
// points at the start of a token in the expression, or at its end when the message says
// "end of expression".
func FuzzCompile(f *testing.F) {
	for _, tc := range matchCases {
		f.Add(tc.expr)
	}
	for _, s := range []string{"tcp prot 80", "net 10.0.0.1/8", "(tcp", "tcp)", "()", "tcp and", "port http",
		"tcp[13] & 2 != 0", "host 1.1.1.1 or (2.2.2.2 and not 3.3.3.3)", "ether src or dst 1:2:3:4:5:6", "vlan 4096"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		flt, err := Compile(expr)
		if err == nil {
			if _, err := Compile(flt.String()); err != nil {
				t.Fatalf("Compile(%q) = %q, which does not compile: %v", expr, flt, err)
			}
			return
		}
		var se *SyntaxError
		if !errors.As(err, &se) || !errors.Is(err, ErrSyntax) || se.Expr != expr {
			t.Fatalf("Compile(%q): %#v is not a SyntaxError for the expression", expr, err)
		}
		switch {
		case se.Offset < 0 || se.Offset > len(expr):
			t.Fatalf("Compile(%q): offset %d outside the expression: %v", expr, se.Offset, err)
		case se.Offset == len(expr) && !strings.Contains(se.Msg, "end of expression"):
			t.Fatalf("Compile(%q): offset at the end but %q", expr, se.Msg)
		case se.Offset < len(expr) && isSpace(expr[se.Offset]):
			t.Fatalf("Compile(%q): offset %d is a space: %v", expr, se.Offset, err)
		}
	})
}
