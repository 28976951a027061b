package agentapi

import (
	"errors"
	"net/url"
	"testing"
	"time"
)

func TestCaptureRequest(t *testing.T) {
	good := &CaptureRequest{Port: "vale0:epair1a", Direction: "tx", Count: 3, Duration: 2 * time.Second, SnapLen: 96, Format: "pcap", Filter: "tcp port 80 and not host 10.0.0.1"}
	got, err := parseCaptureRequest(good.query())
	if err != nil || *got != *good {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, good)
	}
	for q, field := range map[string]string{
		"":                             "port",
		"port=a&direction=up":          "direction",
		"port=a&count=-1":              "count",
		"port=a&count=x":               "count",
		"port=a&duration=5":            "duration",
		"port=a&duration=-1s":          "duration",
		"port=a&snapLen=70000":         "snapLen",
		"port=a&format=json":           "format",
		"port=a&snapLen=1&snapLen=two": "", // the first value counts
		"port=a&filter=icmp+or+arp":    "",
		"port=a&filter=tcp+prot+80":    "filter",
		"port=a&filter=port+http":      "filter",
		"port=a&filter=(udp":           "filter",
	} {
		v, _ := url.ParseQuery(q)
		_, err := parseCaptureRequest(v)
		var ae *Error
		switch {
		case field == "" && err != nil:
			t.Errorf("%q: %v", q, err)
		case field != "" && (!errors.As(err, &ae) || ae.Field != field):
			t.Errorf("%q: %v, want an error naming %s", q, err, field)
		}
	}
}

// FuzzParseCaptureRequest: any query parses to a request that validates, and whose query
// parses back to the same request, or to an error; never a panic.
func FuzzParseCaptureRequest(f *testing.F) {
	for _, s := range []string{"port=vale0:a&direction=rx&count=3&duration=1s&snapLen=64&format=pcap", "port=x&snapLen=65536", "count=%zz",
		"port=a&filter=udp+dst+port+53+or+icmp6", "port=a&filter=not+(arp"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		v, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		r, err := parseCaptureRequest(v)
		if err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("parsed %+v does not validate: %v", r, err)
		}
		back, err := parseCaptureRequest(r.query())
		if err != nil || *back != *r {
			t.Fatalf("round trip of %+v: %+v, %v", r, back, err)
		}
	})
}
