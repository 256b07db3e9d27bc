package store

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Records (job documents, event bodies, delivery records) are stored packed:
// a format byte, then the JSON compressed with zstd against a fixed
// dictionary of previewd's own JSON. Field names, statuses and URL shapes
// repeat in every record, so a record of a couple of kilobytes keeps a few
// hundred bytes, for the whole retention period of every job. JSON written
// before packing existed (it starts with '{') is read as it is.
//
// The dictionary is part of the storage format: a record packed with it can
// be read only with the same bytes. A new dictionary gets a new format byte
// and a new file beside v1, and the reader keeps knowing the old one.

const (
	formatZstdV1 byte = 0x01
	// dictV1ID names the dictionary inside each zstd frame, so that a frame
	// can never be decoded against the wrong one.
	dictV1ID uint32 = 0x70726576 // "prev"
)

//go:embed zdict/v1.json
var dictV1 []byte

type codec struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
}

// records is built on first use: both halves are safe for concurrent use
// (EncodeAll, DecodeAll) and hold their buffers between calls.
var records = sync.OnceValues(func() (*codec, error) {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderDictRaw(dictV1ID, dictV1),
		zstd.WithEncoderCRC(false), // Redis keeps the bytes; a checksum per record only costs
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderLevel(zstd.SpeedFastest)) // as small as SpeedDefault on these records, at a sixth of the time (BenchmarkPackJob)
	if err != nil {
		return nil, fmt.Errorf("record encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderDictRaw(dictV1ID, dictV1),
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(maxRecordSize))
	if err != nil {
		return nil, fmt.Errorf("record decoder: %w", err)
	}
	return &codec{enc: enc, dec: dec}, nil
})

// maxRecordSize bounds what one packed record may expand to; no record
// previewd writes comes near it, so a larger one is corrupt, not big.
const maxRecordSize = 16 << 20

var errBadRecord = errors.New("unknown record format")

// pack returns the stored form of a JSON record. The output depends only on
// the input, so a writer that re-sends a record sends the same bytes.
func pack(raw []byte) ([]byte, error) {
	c, err := records()
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1, 1+len(raw)/3)
	out[0] = formatZstdV1
	return c.enc.EncodeAll(raw, out), nil
}

// Unpack returns the JSON of a record as stored in Redis (a job's "doc", an
// event body, a delivery record), packed or not: for tools and tests that
// read Redis directly.
func Unpack(stored []byte) ([]byte, error) { return unpack(stored) }

// unpack returns the JSON of a stored record, packed or not.
func unpack(stored []byte) ([]byte, error) {
	if len(stored) == 0 || stored[0] == '{' || stored[0] == '[' {
		return stored, nil
	}
	if stored[0] != formatZstdV1 {
		return nil, fmt.Errorf("%w 0x%02x", errBadRecord, stored[0])
	}
	c, err := records()
	if err != nil {
		return nil, err
	}
	raw, err := c.dec.DecodeAll(stored[1:], nil)
	if err != nil {
		return nil, fmt.Errorf("unpack record: %w", err)
	}
	return raw, nil
}

// marshalRecord encodes v as JSON and packs it.
func marshalRecord(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return pack(raw)
}

// unmarshalRecord unpacks a stored record and decodes its JSON into v.
func unmarshalRecord(stored []byte, v any) error {
	raw, err := unpack(stored)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, v)
}
