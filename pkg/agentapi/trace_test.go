package agentapi

import (
	"strings"
	"testing"
)

func TestTraceRequest(t *testing.T) {
	for _, tc := range []struct {
		req  TraceRequest
		want string // "" is valid
	}{
		{TraceRequest{Port: "vale0:p", DstIP: "10.0.0.1"}, ""},
		{TraceRequest{Port: "vale0:p", DstMAC: "ff:ff:ff:ff:ff:ff", Proto: "udp", DstPort: 67}, ""},
		{TraceRequest{DstIP: "10.0.0.1"}, "port: must not be empty"},
		{TraceRequest{Port: "vale0:p"}, "give a destination"},
		{TraceRequest{Port: "vale0:p", DstIP: "10.0.0.300"}, `dstIP: "10.0.0.300" is not an IP address`},
		{TraceRequest{Port: "vale0:p", DstIP: "10.0.0.1", SrcIP: "x"}, `srcIP: "x"`},
		{TraceRequest{Port: "vale0:p", DstMAC: "01:02:03:04:05:06:07:08"}, `dstMAC: "01:02:03:04:05:06:07:08" is not an Ethernet MAC`},
		{TraceRequest{Port: "vale0:p", DstIP: "10.0.0.1", Proto: "sctp"}, `proto: "sctp"`},
		{TraceRequest{Port: "vale0:p", DstIP: "10.0.0.1", DstPort: 80}, "ports are for tcp and udp"},
	} {
		err := tc.req.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.req, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: %v, want an error with %q", tc.req, err, tc.want)
		}
	}
}
