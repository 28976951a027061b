package pcapfilter

// tokKind is the lexical class of a token. Words are everything between spaces and the
// operator characters; the parser decides whether a word is a keyword or a value, so
// addresses (10.0.0.0/8, fe80::1, 00:11:22:33:44:55) and ranges (1000-2000) stay whole.
type tokKind uint8

const (
	tEOF tokKind = iota
	tWord
	tAnd    // and, &&
	tOr     // or, ||
	tNot    // not, !
	tLParen // (
	tRParen // )
	tBad    // a lone "&" or "|": bitwise operators are not supported
)

type token struct {
	kind tokKind
	text string // as written; "end of expression" for tEOF
	off  int    // byte offset in the expression
}

// describe quotes a token for an error message.
func (t token) describe() string {
	if t.kind == tEOF {
		return "end of expression"
	}
	return `"` + t.text + `"`
}

// isSpace is libpcap's white space; a form feed or vertical tab is part of a word there.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// isOperatorChar ends a word: pcap's operators need no spaces around them ("!tcp", "(udp)").
func isOperatorChar(c byte) bool { return c == '(' || c == ')' || c == '!' || c == '&' || c == '|' }

// lex splits expr into tokens ending with tEOF.
func lex(expr string) []token {
	var toks []token
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case isSpace(c):
			i++
		case c == '(':
			toks = append(toks, token{tLParen, "(", i})
			i++
		case c == ')':
			toks = append(toks, token{tRParen, ")", i})
			i++
		case c == '!':
			toks = append(toks, token{tNot, "!", i})
			i++
		case c == '&' || c == '|':
			kind, n := tAnd, 2
			if c == '|' {
				kind = tOr
			}
			if i+1 >= len(expr) || expr[i+1] != c {
				kind, n = tBad, 1 // a lone & or |, reported by the parser in its turn
			}
			toks = append(toks, token{kind, expr[i : i+n], i})
			i += n
		default:
			start := i
			for i < len(expr) && !isSpace(expr[i]) && !isOperatorChar(expr[i]) {
				i++
			}
			w := expr[start:i]
			kind := tWord
			switch w {
			case "and":
				kind = tAnd
			case "or":
				kind = tOr
			case "not":
				kind = tNot
			}
			toks = append(toks, token{kind, w, start})
		}
	}
	return append(toks, token{tEOF, "end of expression", len(expr)})
}
