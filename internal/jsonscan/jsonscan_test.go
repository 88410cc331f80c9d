package jsonscan

import (
	"encoding/binary"
	"encoding/json"
	"testing"
)

func TestPlainWords(t *testing.T) {
	// Every byte value in every position of an otherwise plain word, read
	// both from bytes and from a string.
	for c := range 256 {
		wantWord := c >= 0x20 && c != '"' && c != '\\'
		wantASCII := wantWord && c < 0x80
		for pos := range 8 {
			word := []byte("abcdefgh")
			word[pos] = byte(c)
			x := Load64(string(word), 0)
			if y := binary.LittleEndian.Uint64(word); x != y {
				t.Fatalf("Load64(%q): got %#x, want %#x", word, x, y)
			}
			if got := PlainWord(x); got != wantWord {
				t.Errorf("PlainWord with %#x at %d: got %v, want %v", c, pos, got, wantWord)
			}
			if got := PlainASCII(x); got != wantASCII {
				t.Errorf("PlainASCII with %#x at %d: got %v, want %v", c, pos, got, wantASCII)
			}
		}
	}
}

// valid reports whether data is one JSON value, as the scanner judges it.
func valid[T Text](data T) bool {
	i := Space(data, 0)
	end, ok := Value(data, i, 0, 10000)
	return ok && Space(data, end) == len(data)
}

func TestValueAgreesWithEncodingJSON(t *testing.T) {
	tests := []string{
		`{}`, `[]`, ` {"a": [1, -2.5e+3, true, false, null, "x\"\u00e9"]} `, `"\ud83d"`, `0`, `-0.0`,
		`{"a":1,}`, `[1 2]`, `01`, `1.`, `.5`, `-`, `"\x"`, "\"a\x01\"", `tru`, `{"a"}`, `{1:2}`, `[`, `"`, ``,
		"\"\xff\"", `{"a":{"b":[{}]}}`, `1e`, `1e+`, `[1,]`,
	}
	for _, in := range tests {
		want := json.Valid([]byte(in))
		if got := valid([]byte(in)); got != want {
			t.Errorf("bytes %q: got %v, want %v (encoding/json)", in, got, want)
		}
		if got := valid(in); got != want {
			t.Errorf("string %q: got %v, want %v (encoding/json)", in, got, want)
		}
	}
}

func FuzzValue(f *testing.F) {
	for _, s := range []string{`{"a":[1,"b",null]}`, `-1.5e3`, `"\u00e9"`, `[`, `{"":{}}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if got, want := valid(in), json.Valid([]byte(in)); got != want {
			t.Errorf("%q: got %v, want %v (encoding/json)", in, got, want)
		}
	})
}
