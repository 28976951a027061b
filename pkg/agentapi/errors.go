package agentapi

import (
	"errors"
	"net/http"
)

// Code classifies an agent error. The plugin maps codes, never messages, to CNI codes.
type Code string

const (
	// CodeInvalidRequest: the request failed validation; Field names the culprit.
	CodeInvalidRequest Code = "InvalidRequest"
	// CodeNotFound: no attachment for the key.
	CodeNotFound Code = "NotFound"
	// CodeConflict: a requested address or MAC belongs to another attachment.
	CodeConflict Code = "Conflict"
	// CodeExhausted: a range has no free address.
	CodeExhausted Code = "Exhausted"
	// CodeNotReady: the agent runs but cannot serve this yet (store or switch not up).
	CodeNotReady Code = "NotReady"
	// CodeInternal: anything else on the agent side.
	CodeInternal Code = "Internal"
	// CodeUnavailable (client side only): nothing answers on the socket.
	CodeUnavailable Code = "Unavailable"
	// CodeTimeout (client side only): the call's deadline expired.
	CodeTimeout Code = "Timeout"
)

// HTTPStatus is the status the server sends with an error of this code.
func (c Code) HTTPStatus() int {
	switch c {
	case CodeInvalidRequest:
		return http.StatusBadRequest
	case CodeNotFound:
		return http.StatusNotFound
	case CodeConflict:
		return http.StatusConflict
	case CodeExhausted:
		return http.StatusInsufficientStorage
	case CodeNotReady, CodeUnavailable:
		return http.StatusServiceUnavailable
	case CodeTimeout:
		return http.StatusGatewayTimeout
	default:
		return http.StatusInternalServerError
	}
}

// ErrorBody is the JSON body of every non-2xx response.
type ErrorBody struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	// Field names the request field at fault, for CodeInvalidRequest.
	Field string `json:"field,omitempty"`
}

// Error is an agent API error, on either side of the socket.
type Error struct {
	ErrorBody
	// cause is the transport error on the client side (never sent).
	cause error
}

// Sentinels for errors.Is; only Code is compared.
var (
	ErrInvalidRequest = &Error{ErrorBody: ErrorBody{Code: CodeInvalidRequest}}
	ErrNotFound       = &Error{ErrorBody: ErrorBody{Code: CodeNotFound}}
	ErrConflict       = &Error{ErrorBody: ErrorBody{Code: CodeConflict}}
	ErrExhausted      = &Error{ErrorBody: ErrorBody{Code: CodeExhausted}}
	ErrNotReady       = &Error{ErrorBody: ErrorBody{Code: CodeNotReady}}
	ErrInternal       = &Error{ErrorBody: ErrorBody{Code: CodeInternal}}
	ErrUnavailable    = &Error{ErrorBody: ErrorBody{Code: CodeUnavailable}}
	ErrTimeout        = &Error{ErrorBody: ErrorBody{Code: CodeTimeout}}
)

// NewError returns an *Error with the code and message; the agent returns these from its
// Interface methods.
func NewError(code Code, msg string) *Error {
	return &Error{ErrorBody: ErrorBody{Code: code, Message: msg}}
}

func invalid(field, msg string) *Error {
	return &Error{ErrorBody: ErrorBody{Code: CodeInvalidRequest, Field: field, Message: field + ": " + msg}}
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "agent: " + string(e.Code)
	}
	return "agent: " + string(e.Code) + ": " + e.Message
}

// Is matches another *Error with the same Code, so errors.Is(err, ErrNotFound) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Unwrap returns the transport cause (client side), if any.
func (e *Error) Unwrap() error { return e.cause }

// CodeOf returns the Code of the *Error in err's chain, CodeInternal for any other non-nil
// error, and "" for nil.
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if asError(err, &e) {
		return e.Code
	}
	return CodeInternal
}

func asError(err error, target **Error) bool { return errors.As(err, target) }
