package tarindex

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"
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
