package vale

import (
	"fmt"
	"strings"
)

// NamePrefix is VALE's NM_BDG_NAME: every switch name starts with it.
const NamePrefix = "vale"

// MaxNameLen bounds the switch part and the port part of a name
// separately (IFNAMSIZ − 1, so a port can carry a Linux interface name).
const MaxNameLen = 15

// ParseName splits a VALE port name "vale<sw>:<port>" (for example
// "vale0:p1") into the switch name ("vale0") and the port name ("p1").
// The switch suffix may hold letters, digits and '_' (as netmap checks
// it); the port name letters, digits and "_-.", the characters of Linux
// interface names, optionally followed by '^' for a host port. Errors wrap ErrInvalid and say what is wrong.
func ParseName(name string) (sw, port string, err error) {
	i := strings.IndexByte(name, ':')
	if i < 0 {
		return "", "", fmt.Errorf("parse name %q: missing ':' between switch and port: %w", name, ErrInvalid)
	}
	sw, port = name[:i], name[i+1:]
	if err := ValidateSwitchName(sw); err != nil {
		return "", "", fmt.Errorf("parse name %q: %w", name, err)
	}
	if err := validatePortName(port); err != nil {
		return "", "", fmt.Errorf("parse name %q: %w", name, err)
	}
	return sw, port, nil
}

// JoinName is the inverse of ParseName.
func JoinName(sw, port string) string { return sw + ":" + port }

// ValidateSwitchName checks a switch name such as "vale0".
func ValidateSwitchName(sw string) error {
	if !strings.HasPrefix(sw, NamePrefix) {
		return fmt.Errorf("switch name %q does not start with %q: %w", sw, NamePrefix, ErrInvalid)
	}
	if len(sw) == len(NamePrefix) {
		return fmt.Errorf("switch name %q has an empty suffix after %q: %w", sw, NamePrefix, ErrInvalid)
	}
	if len(sw) > MaxNameLen {
		return fmt.Errorf("switch name %q longer than %d bytes: %w", sw, MaxNameLen, ErrInvalid)
	}
	for j := len(NamePrefix); j < len(sw); j++ {
		if c := sw[j]; !isAlnum(c) && c != '_' {
			return fmt.Errorf("switch name %q: byte %q at %d not in [A-Za-z0-9_]: %w", sw, c, j, ErrInvalid)
		}
	}
	return nil
}

// ValidatePortName checks a port name such as "eth0" (the part after the
// switch's name and ':').
func ValidatePortName(p string) error { return validatePortName(p) }

func validatePortName(p string) error {
	if p == "" {
		return fmt.Errorf("port name is empty: %w", ErrInvalid)
	}
	if len(p) > MaxNameLen {
		return fmt.Errorf("port name %q longer than %d bytes: %w", p, MaxNameLen, ErrInvalid)
	}
	for j := 0; j < len(p); j++ {
		if c := p[j]; c == '^' && j == len(p)-1 && j > 0 {
			continue // a host port, "eth0^"
		}
		if c := p[j]; !isAlnum(c) && c != '_' && c != '-' && c != '.' {
			return fmt.Errorf("port name %q: byte %q at %d not in [A-Za-z0-9_.-]: %w", p, c, j, ErrInvalid)
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
