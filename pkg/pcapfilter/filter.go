package pcapfilter

import "strings"

// Filter is a compiled expression. It is immutable, so one Filter may be shared by any
// number of goroutines calling Match.
type Filter struct {
	root *node  // nil: match every frame
	text string // normalised expression
}

// Compile parses expr (tcpdump syntax, the subset in the package documentation). An empty
// or all-space expr matches every frame. Every error wraps ErrSyntax and is a
// *SyntaxError naming the offending token and its byte offset.
func Compile(expr string) (*Filter, error) {
	toks := lex(expr)
	if toks[0].kind == tEOF {
		return &Filter{}, nil
	}
	p := &parser{expr: expr, toks: toks, bare: bareHost, ctx: quals{typ: "host"}}
	root, err := p.parseExpr()
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tEOF {
		return nil, p.unexpected(t, `"and" or "or"`)
	}
	var b strings.Builder
	root.format(&b)
	return &Filter{root: root, text: b.String()}, nil
}

// Match reports whether the Ethernet frame (starting at the destination MAC) matches. It
// never allocates and never panics, whatever the bytes: a primitive whose header is not
// wholly inside the frame is false. A nil Filter matches every frame, like an empty
// expression.
func (f *Filter) Match(frame []byte) bool {
	if f == nil || f.root == nil {
		return true
	}
	var h headers
	h.decode(frame)
	return f.root.match(frame, &h)
}

// String returns the expression as compiled, normalised: operators spelled out, every
// primitive fully qualified ("host 1.1.1.1 or 2.2.2.2" becomes "host 1.1.1.1 or host
// 2.2.2.2"), and nested and/or groups parenthesised. Compiling it gives the same filter.
func (f *Filter) String() string {
	if f == nil {
		return ""
	}
	return f.text
}
