// Package agentapi is the versioned contract between the epair CNI plugin and the node agent.
//
// The model: the agent owns every piece of node state (IPAM, switches, ports); the plugin is a
// short-lived process that asks for it. They talk JSON over HTTP on a root-only unix socket.
// Both sides compile against this package, so the contract exists exactly once:
//
//   - the request/response types (this file's siblings, all under the /v1 path prefix);
//   - Interface, the Go interface the agent implements;
//   - NewServer(Interface) http.Handler, which decodes, validates and dispatches requests;
//   - Client, which the plugin uses, with a deadline on every call.
//
// Endpoints (all bodies JSON; errors are an ErrorBody with an HTTP status derived from its
// Code):
//
//	POST /v1/attachments/allocate  AllocateRequest -> Attachment   allocate-or-get, idempotent per Key
//	POST /v1/attachments/attach    AttachRequest   -> Port         put the host link on the switch
//	POST /v1/attachments/release   ReleaseRequest  -> ReleaseResponse  detach + free, idempotent
//	POST /v1/attachments/check     CheckRequest    -> Attachment   with Port filled if attached
//	GET  /v1/attachments                           -> AttachmentList
//	POST /v1/gc                    GCRequest       -> GCResponse   remove what is not in Valid
//	GET  /v1/status                                -> Status       always 200; Ready says it all
//	GET  /healthz                                  -> 200 while the process serves
//	GET  /readyz                                   -> 200 when Status().Ready, else 503
//
// NewAgentServer adds the operator's endpoints (valectl):
//
//	GET  /v1/switches                              -> SwitchList   switches, ports, counters
//	GET  /v1/switches/{sw}/fdb                     -> FDB
//	GET  /v1/capture?port=…                        -> a pcapng or pcap stream (CaptureRequest)
//	POST /v1/trace                 TraceRequest    -> TraceResult  a frame's way, not sent
//	GET  /v1/peers                                 -> PeerList     the other nodes, their mode, counters
//
// Errors: every failure crosses the wire as ErrorBody{Code, Message, Field}. The client turns
// transport failures into the same *Error type (CodeUnavailable when nothing listens on the
// socket, CodeTimeout when the call's deadline expires) so that the plugin maps agent errors
// to CNI error codes in one place by looking at Code only. *Error implements Is against the
// sentinels (ErrNotFound, ErrUnavailable, ...) and Unwrap to the transport cause, so
// errors.Is(err, context.DeadlineExceeded) also holds for a timed-out call.
//
// Socket security: the socket is the only access control, so Listen creates it root-only.
// The parent directory is created 0700 (and an existing one that group or others can enter
// is refused rather than silently chmod'ed, because it might be a shared directory such as
// /tmp); the socket is chmod'ed 0600 right after bind, which is umask-independent, and the
// window between bind and chmod is harmless because nobody else can traverse the 0700
// directory. A leftover socket file from a crashed agent is removed only if it is a socket
// and nothing answers on it; a live socket (another agent) or a non-socket file is an error.
package agentapi
