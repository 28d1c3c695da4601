package api

import (
	"bytes"
	"errors"
	"fmt"

	jsonv2 "github.com/go-json-experiment/json"
)

// ErrEmptyBody: a request body holds nothing.
var ErrEmptyBody = errors.New("request body is empty; send a JSON object")

// DecodeStrict decodes exactly one JSON value of b into v: names match
// case-sensitively, duplicate and unknown members are refused, and so is
// anything after the value or invalid UTF-8.
func DecodeStrict(b []byte, v any) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return ErrEmptyBody
	}
	if err := jsonv2.Unmarshal(b, v, jsonv2.RejectUnknownMembers(true)); err != nil {
		return fmt.Errorf("request body is not valid JSON for this call: %w", err)
	}
	return nil
}
