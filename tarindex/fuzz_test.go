package tarindex

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
)

// FuzzDecodeIndex feeds the saved-index decoder arbitrary bytes (with a
// valid checksum, so the fuzzer reaches past it): it must refuse them or
// return entries that read without panicking.
func FuzzDecodeIndex(f *testing.F) {
	tb := richTar(f, 10)
	ix, err := Build(bytes.NewReader(tb), 0, int64(len(tb)))
	if err != nil {
		f.Fatal(err)
	}
	fp, err := fingerprint(bytes.NewReader(tb), 0, int64(len(tb)))
	if err != nil {
		f.Fatal(err)
	}
	good, err := encodeIndex(ix, 0, int64(len(tb)), fp)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good[:len(good)-4])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		data := binary.LittleEndian.AppendUint32(bytes.Clone(body), crc32.Checksum(body, crcTable))
		got, err := decodeIndex(data, 0, int64(len(tb)), fp)
		if err != nil {
			return
		}
		p := make([]byte, 64)
		for _, e := range got.Entries {
			_, _ = e.ReadAt(tb, p, 0)
			_ = e.Slice(tb, 0, 64)
		}
	})
}

// FuzzIndexStream: on any bytes, the one-pass index of a stream either
// gives up (nil, for Build to decide) or equals what Build gives; and the
// one pass over a gzipped outer tarball never panics, and agrees with
// Build on the tarball's members when it succeeds.
func FuzzIndexStream(f *testing.F) {
	f.Add(makeTar(f, tar.FormatPAX, file("a", "hello"), file("b/c", strings.Repeat("x", 700))))
	f.Add(makeTar(f, tar.FormatGNU, file(strings.Repeat("long/", 30)+"name", "body")))
	f.Add(makeTar(f, tar.FormatUSTAR, file("inner.tar", string(makeTar(f, tar.FormatPAX, file("x", "y"))))))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, raw []byte) {
		want, werr := Build(bytes.NewReader(raw), 0, int64(len(raw)))
		ix, size, err := IndexStream(bytes.NewReader(raw), 0)
		if err != nil {
			t.Fatalf("IndexStream over a bytes.Reader failed: %v", err)
		}
		if size != int64(len(raw)) {
			t.Fatalf("size %d, want %d", size, len(raw))
		}
		if ix != nil {
			if werr != nil {
				t.Fatalf("IndexStream indexed what Build refuses (%v)", werr)
			}
			if !reflect.DeepEqual(want.Entries, ix.Entries) || want.End != ix.End {
				t.Fatalf("IndexStream and Build disagree")
			}
		}
		var gzb bytes.Buffer
		zw := gzip.NewWriter(&gzb)
		zw.Write(raw)
		zw.Close()
		out, err := (&Cache{}).IndexOuter("k", bytes.NewReader(gzb.Bytes()), int64(gzb.Len()), CompressionGzip, CompressedOptions{})
		if err != nil || werr != nil {
			return
		}
		if len(out.Index.Entries) != len(want.Entries) {
			t.Fatalf("IndexOuter found %d members, Build %d", len(out.Index.Entries), len(want.Entries))
		}
	})
}
