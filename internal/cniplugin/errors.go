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
	// ErrCheckFailed: CHECK found a difference between the result and the pod (code 999
	// with the difference in the message; CNI defines no dedicated code).
	ErrCheckFailed = errors.New("check failed")
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
	}
	var ae *agentapi.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case agentapi.CodeInvalidRequest:
			// The agent rejected what the config or runtimeConfig asked for.
			return types.ErrInvalidNetworkConfig
		case agentapi.CodeNotFound:
			return types.ErrUnknownContainer
		case agentapi.CodeNotReady, agentapi.CodeUnavailable, agentapi.CodeTimeout:
			// Transient: the agent is starting, restarting or busy.
			return types.ErrTryAgainLater
		}
	}
	return types.ErrInternal
}
