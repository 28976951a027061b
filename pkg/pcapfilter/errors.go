package pcapfilter

import (
	"errors"
	"fmt"
)

// ErrSyntax is wrapped by every error Compile returns: the expression is not in the
// supported subset, or is not a valid pcap-filter expression at all.
var ErrSyntax = errors.New("pcapfilter: syntax error")

// SyntaxError says where and why Compile rejected an expression.
type SyntaxError struct {
	Expr   string // the expression as given to Compile
	Offset int    // byte offset of the offending token; len(Expr) for "end of expression"
	Msg    string // what is wrong, naming the offending token
	Hint   string // optional: what to write instead, or why the token is not supported
}

func (e *SyntaxError) Error() string {
	s := fmt.Sprintf("pcapfilter: %q: %s at offset %d", e.Expr, e.Msg, e.Offset)
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

// Is makes errors.Is(err, ErrSyntax) true for every SyntaxError.
func (e *SyntaxError) Is(target error) bool { return target == ErrSyntax }
