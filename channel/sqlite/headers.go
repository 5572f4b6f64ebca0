package sqlite

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// Headers are stored as a JSON object, readable with SQLite's JSON
// functions. Decoding them is on the path of every delivery, so the common
// case (no escapes, as encoding/json writes plain keys and values) is
// parsed by hand, and anything else by encoding/json.

func encodeHeaders(h map[string]string) ([]byte, error) {
	if len(h) == 0 {
		return nil, nil
	}
	n := 2
	for k, v := range h {
		if !plain(k) || !plain(v) {
			return json.Marshal(h)
		}
		n += len(k) + len(v) + 6
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	for k, v := range h {
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, k...)
		b = append(b, `":"`...)
		b = append(b, v...)
		b = append(b, '"')
	}
	return append(b, '}'), nil
}

// plain reports whether s needs no escaping in JSON: valid UTF-8 without
// quotes, backslashes or control characters.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' {
			return false
		}
	}
	return utf8.ValidString(s)
}

func decodeHeaders(b []byte) (map[string]string, error) {
	if h, ok := decodeHeadersFast(b); ok {
		return h, nil
	}
	var h map[string]string
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, err
	}
	return h, nil
}

// decodeHeadersFast parses {"k":"v",...} without whitespace or escapes. It
// reports false for anything else.
func decodeHeadersFast(b []byte) (map[string]string, bool) {
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' || bytes.IndexByte(b, '\\') >= 0 {
		return nil, false
	}
	s := b[1 : len(b)-1]
	h := make(map[string]string, bytes.Count(s, []byte{':'}))
	for len(s) > 0 {
		k, rest, ok := quoted(s)
		if !ok || len(rest) == 0 || rest[0] != ':' {
			return nil, false
		}
		v, rest, ok := quoted(rest[1:])
		if !ok {
			return nil, false
		}
		h[k] = v
		if len(rest) == 0 {
			break
		}
		if rest[0] != ',' || len(rest) == 1 {
			return nil, false
		}
		s = rest[1:]
	}
	return h, true
}

// quoted splits a leading JSON string without escapes off s.
func quoted(s []byte) (string, []byte, bool) {
	if len(s) == 0 || s[0] != '"' {
		return "", nil, false
	}
	end := bytes.IndexByte(s[1:], '"')
	if end < 0 {
		return "", nil, false
	}
	str := s[1 : 1+end]
	for _, c := range str {
		if c < 0x20 {
			return "", nil, false
		}
	}
	if !utf8.Valid(str) {
		return "", nil, false
	}
	return string(str), s[2+end:], true
}
