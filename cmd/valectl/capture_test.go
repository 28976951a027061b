package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/epair-cni/epair/pkg/agentapi"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// stream is a pcapng (ng) or pcap capture of frames of the given sizes, and the offset at
// which each packet ends (ends[0]: the end of the file header).
func stream(t *testing.T, ng bool, sizes []int) (all []byte, ends []int) {
	var buf bytes.Buffer
	var write func(n int)
	if ng {
		w, err := pcapgo.NewNgWriterInterface(&buf, pcapgo.NgInterface{Name: "epair", LinkType: layers.LinkTypeEthernet, SnapLength: 1 << 16}, pcapgo.DefaultNgWriterOptions)
		if err != nil {
			t.Fatal(err)
		}
		w.Flush()
		write = func(n int) {
			o := pcapgo.NgPacketOptions{Comments: []string{"dropped: x"}}
			w.WritePacketWithOptions(gopacket.CaptureInfo{Timestamp: time.Now(), CaptureLength: n, Length: n}, make([]byte, n), o)
			w.Flush()
		}
	} else {
		w := pcapgo.NewWriter(&buf)
		w.WriteFileHeader(1<<16, layers.LinkTypeEthernet)
		write = func(n int) {
			w.WritePacket(gopacket.CaptureInfo{Timestamp: time.Now(), CaptureLength: n, Length: n}, make([]byte, n))
		}
	}
	ends = append(ends, buf.Len())
	for _, n := range sizes {
		write(n)
		ends = append(ends, buf.Len())
	}
	return buf.Bytes(), ends
}

// TestBlockWriter cuts pcapng and pcap streams at random offsets after random-sized writes:
// blockWriter passes on exactly the whole blocks before the cut (so a capture ended
// anywhere is a readable file) and counts the packets among them; what is not a capture
// passes through unchanged.
func TestBlockWriter(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, ng := range []bool{true, false} {
		sizes := []int{60, 65226, 98, 1514, 40000, 61}
		all, ends := stream(t, ng, sizes)
		for trial := 0; trial < 300; trial++ {
			cut := rng.IntN(len(all) + 1)
			var out bytes.Buffer
			bw := &blockWriter{w: &out}
			for off := 0; off < cut; {
				n := min(cut-off, 1+rng.IntN(40000))
				if k, err := bw.Write(all[off : off+n]); k != n || err != nil {
					t.Fatalf("write of %d bytes: %d, %v", n, k, err)
				}
				off += n
			}
			// Want: up to the last block end at or before the cut.
			want, pk := 0, 0
			for i, e := range ends {
				if e <= cut {
					want = e
					pk = i
				}
			}
			if ng && pk == 0 { // within the header: SHB then IDB
				shb := int(binary.LittleEndian.Uint32(all[4:]))
				want = 0
				if cut >= shb {
					want = shb
				}
				if cut >= ends[0] {
					want = ends[0]
				}
			}
			if out.Len() != want || bw.packets != pk || bw.raw {
				t.Fatalf("ng %v cut %d: wrote %d want %d, packets %d want %d raw %v", ng, cut, out.Len(), want, bw.packets, pk, bw.raw)
			}
			if !bytes.Equal(out.Bytes(), all[:want]) {
				t.Fatalf("ng %v cut %d: the bytes written differ from the stream's", ng, cut)
			}
		}
	}
	// Not a capture: passed through.
	var out bytes.Buffer
	bw := &blockWriter{w: &out}
	bw.Write([]byte("hello, this is not a capture"))
	if out.String() != "hello, this is not a capture" || !bw.raw {
		t.Fatalf("not a capture: wrote %q (raw %v)", out.String(), bw.raw)
	}
}

// tapping is an agent whose tap is still being put in place when the capture is
// interrupted: it writes nothing until its context ends.
type tapping struct {
	fakeAgent
	asked chan struct{}
}

func (a tapping) Capture(ctx context.Context, _ *agentapi.CaptureRequest, _ io.Writer) error {
	close(a.asked)
	<-ctx.Done()
	return ctx.Err()
}

// TestCaptureInterruptedBeforeHeader: a capture interrupted (Ctrl-C) before the agent's
// first byte still leaves a file that readers take, with no packets, in either format.
func TestCaptureInterruptedBeforeHeader(t *testing.T) {
	for _, format := range []string{"pcapng", "pcap"} {
		t.Run(format, func(t *testing.T) {
			agent := tapping{asked: make(chan struct{})}
			sock := filepath.Join(t.TempDir(), "run", "agent.sock")
			srv, err := agentapi.ListenAndServe(sock, agentapi.NewAgentServer(agent, agent, nil))
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			ctx, cancel := context.WithCancel(context.Background())
			go func() { <-agent.asked; cancel() }()
			out := filepath.Join(t.TempDir(), "c."+format)
			if err := runCapture(ctx, io.Discard, options{socket: sock}, []string{"vale0:p", "-F", format, "-w", out}); err != nil {
				t.Fatalf("interrupted capture: %v", err)
			}
			f, err := os.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var next func() ([]byte, gopacket.CaptureInfo, error)
			if format == "pcap" {
				r, err := pcapgo.NewReader(f)
				if err != nil {
					t.Fatalf("pcap reader: %v", err)
				}
				next = r.ReadPacketData
			} else {
				r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
				if err != nil {
					t.Fatalf("pcapng reader: %v", err)
				}
				next = r.ReadPacketData
			}
			if _, _, err := next(); err != io.EOF {
				t.Fatalf("first packet: %v, want io.EOF", err)
			}
		})
	}
}
