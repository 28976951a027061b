package cniplugin

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/epair-cni/epair/pkg/agentapi"
)

// Sentinels the handlers wrap; CNIError maps them (and agentapi codes) to CNI error codes.
var (
	// ErrIncompatibleVersion: cniVersion not supported (CNI code 1).
	ErrIncompatibleVersion = errors.New("incompatible CNI version")
	// ErrInvalidArgs: CNI_ARGS or another CNI_* environment variable is wrong (code 4).
	ErrInvalidArgs = errors.New("invalid CNI environment")
	// ErrDecode: the config is not valid JSON of the expected shape (code 6).
	ErrDecode = errors.New("decode network configuration")
	// ErrInvalidConfig: a config field has a wrong value (code 7).
	ErrInvalidConfig = errors.New("invalid network configuration")
	// ErrInvalidNetNS: the netns path cannot be used (code 8).
	ErrInvalidNetNS = errors.New("invalid network namespace")
	// ErrNotAvailable: the plugin cannot serve ADD now; STATUS reports it (code 50).
	ErrNotAvailable = errors.New("plugin not available")
	// ErrAddressConflict: a requested address is another attachment's, or a repeated ADD
	// asks for addresses other than its attachment's (CodeAddressConflict).
	ErrAddressConflict = errors.New("address conflict")
	// ErrCheckFailed: CHECK found a difference between the result and the pod (code 999
	// with the difference in the message; CNI defines no dedicated code).
	ErrCheckFailed = errors.New("check failed")
)

// Plugin-specific CNI error codes (the spec leaves 100 and up to plugins; it has no code
// for IPAM failures, and the reference host-local plugin returns 999 for them).
const (
	// CodeAddressConflict: a requested address belongs to another attachment, or a repeated
	// ADD asks for other addresses than the attachment holds.
	CodeAddressConflict uint = 100
	// CodeRangeExhausted: no free address is left in the switch's range of a family.
	CodeRangeExhausted uint = 101
)

// FieldError is a configuration or argument error naming the offending field and what is
// allowed. It matches its kind (ErrInvalidConfig, ErrInvalidArgs, ErrIncompatibleVersion)
// with errors.Is.
type FieldError struct {
	Field   string
	Value   string
	Allowed string
	Reason  string
	kind    error
}

func (e *FieldError) Error() string {
	s := fmt.Sprintf("%v: %s", e.kind, e.Field)
	if e.Value != "" {
		s += fmt.Sprintf(": %q", e.Value)
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	if e.Allowed != "" {
		s += " (allowed: " + e.Allowed + ")"
	}
	return s
}

// Is matches the error's kind.
func (e *FieldError) Is(target error) bool { return target == e.kind }

func fieldErr(kind error, field, value, reason, allowed string) *FieldError {
	return &FieldError{Field: field, Value: value, Reason: reason, Allowed: allowed, kind: kind}
}

// CNIError is the one place that turns an error into the CNI error the runtime sees. A
// *types.Error passes through; sentinels and agent API codes map as documented below; the
// message is the whole wrapped chain, so it names the field or the step that failed.
func CNIError(err error) *types.Error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	return types.NewError(cniCode(err), err.Error(), "")
}

func cniCode(err error) uint {
	switch {
	case errors.Is(err, ErrIncompatibleVersion):
		return types.ErrIncompatibleCNIVersion
	case errors.Is(err, ErrInvalidArgs):
		return types.ErrInvalidEnvironmentVariables
	case errors.Is(err, ErrDecode):
		return types.ErrDecodingFailure
	case errors.Is(err, ErrInvalidConfig):
		return types.ErrInvalidNetworkConfig
	case errors.Is(err, ErrInvalidNetNS):
		return types.ErrInvalidNetNS
	case errors.Is(err, ErrNotAvailable):
		return types.ErrPluginNotAvailable
	case errors.Is(err, ErrAddressConflict):
		return CodeAddressConflict
	}
	var ae *agentapi.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case agentapi.CodeInvalidRequest:
			// The agent rejected what the config or runtimeConfig asked for.
			return types.ErrInvalidNetworkConfig
		case agentapi.CodeNotFound:
			return types.ErrUnknownContainer
		case agentapi.CodeConflict:
			// An address (or MAC, or switch) another attachment has, or the attachment's own
			// that a repeated ADD asks to change.
			return CodeAddressConflict
		case agentapi.CodeExhausted:
			return CodeRangeExhausted
		case agentapi.CodeNotReady, agentapi.CodeUnavailable, agentapi.CodeTimeout:
			// Transient: the agent is starting, restarting or busy.
			return types.ErrTryAgainLater
		}
	}
	return types.ErrInternal
}
