package rtr

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

func vrps100k() []VRP { return vrpsN(100_000) }

// vrpsN is n distinct VRPs, a quarter IPv6.
func vrpsN(n int) []VRP {
	out := make([]VRP, 0, n)
	for i := range n {
		if i%4 == 3 {
			a := [16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 16), byte(i >> 8), byte(i)}
			out = append(out, VRP{netip.PrefixFrom(netip.AddrFrom16(a), 56), 64, 64500 + uint32(i%7)})
			continue
		}
		a := [4]byte{10 + byte(i>>16), byte(i >> 8), byte(i), 0}
		out = append(out, VRP{netip.PrefixFrom(netip.AddrFrom4(a), 24), 24, 64500 + uint32(i%7)})
	}
	return out
}

// BenchmarkResetQuery100k: a router's Reset Query answered in full with
// 100,000 VRPs over loopback TCP, read to the End of Data. "cold" encodes
// the set anew each time (the first router after a change), "warm" sends
// the encoding cached for the serial. Each reports the time to write the
// same bytes through a bare loopback socket, measured in the same run
// (socket-ns/op), and the ratio (x-socket).
func BenchmarkResetQuery100k(b *testing.B) {
	for _, cold := range []bool{true, false} {
		name := "warm"
		if cold {
			name = "cold"
		}
		b.Run(name, func(b *testing.B) {
			c := NewCache("bench.example.net", 0)
			c.Load(1, vrps100k())
			s, err := NewServer(Config{Cache: c})
			if err != nil {
				b.Fatal(err)
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go s.Serve(l)
			defer s.Close()
			conn, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			br := bufio.NewReaderSize(conn, 1<<16)
			r := NewReader(br, 0)
			var buf []byte
			query := (&PDU{Version: 1, Type: TypeResetQuery}).Append(nil)
			size := 0
			answer := func() int {
				if cold {
					c.mu.Lock()
					c.full = [MaxVersion + 1][]byte{}
					c.mu.Unlock()
				}
				if _, err := conn.Write(query); err != nil {
					b.Fatal(err)
				}
				if size > 0 {
					// the length is known: read the bytes as the socket
					// baseline does, and check the last PDU
					if _, err := io.ReadFull(br, buf); err != nil {
						b.Fatal(err)
					}
					if buf[len(buf)-24+1] != TypeEndOfData {
						b.Fatal("the answer does not end in End of Data")
					}
					return size
				}
				n := 0
				for {
					raw, err := r.ReadRaw()
					if err != nil {
						b.Fatal(err)
					}
					n += len(raw)
					if raw[1] == TypeEndOfData {
						return n
					}
				}
			}
			size = answer()
			buf = make([]byte, size)
			b.SetBytes(int64(size))
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				answer()
			}
			elapsed := time.Since(start)
			b.StopTimer()
			sock := socketTime(b, size, b.N)
			b.ReportMetric(float64(sock.Nanoseconds())/float64(b.N), "socket-ns/op")
			b.ReportMetric(float64(elapsed)/float64(sock), "x-socket")
		})
	}
}

// socketTime is how long n writes of size bytes through a bare loopback
// TCP connection take, read in full at the other end.
func socketTime(b *testing.B, size, n int) time.Duration {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	buf := make([]byte, size)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		for range n {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			c.Write([]byte{1})
		}
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	out := make([]byte, size)
	ack := make([]byte, 1)
	start := time.Now()
	for range n {
		if _, err := c.Write(out); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, ack); err != nil {
			b.Fatal(err)
		}
	}
	d := time.Since(start)
	<-done
	return d
}

// BenchmarkDecode is the decoder alone, on an IPv6 prefix PDU.
func BenchmarkDecode(b *testing.B) {
	p := PDU{Version: 1, Type: TypeIPv6Prefix, Announce: true, Prefix: netip.MustParsePrefix("2001:db8::/32"), MaxLen: 48, ASN: 64500}
	raw := p.Append(nil)
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := Decode(raw); err != nil {
			b.Fatal(err)
		}
	}
}
