// Package jsonscan validates and skips JSON tokens in place, accepting
// exactly what encoding/json accepts. The hand-written decoders on hot paths
// (request events, Graph answers) read only the few fields they need with
// it, and must still refuse whatever encoding/json would refuse.
//
// Every function takes the text and an index into it and returns the index
// just past what it read; a false result means the text is not JSON there.
package jsonscan

// Text is what the scanner reads: payload bytes or a string view of them.
type Text interface{ ~string | ~[]byte }

// Space returns the index of the first non-whitespace byte at or after i.
func Space[T Text](data T, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// Value validates the value starting at data[i], which sits inside depth
// open objects and arrays; containers deeper than maxDepth are refused.
func Value[T Text](data T, i, depth, maxDepth int) (int, bool) {
	if i >= len(data) {
		return i, false
	}
	switch c := data[i]; c {
	case '"':
		return String(data, i)
	case '{', '[':
		if depth >= maxDepth {
			return i, false
		}
		return container(data, i, depth+1, maxDepth)
	case 't':
		return Literal(data, i, "true")
	case 'f':
		return Literal(data, i, "false")
	case 'n':
		return Literal(data, i, "null")
	default:
		if c == '-' || isDigit(c) {
			return Number(data, i)
		}
		return i, false
	}
}

// container validates the object or array starting at data[i], which makes
// depth open containers.
func container[T Text](data T, i, depth, maxDepth int) (int, bool) {
	closer := byte(']')
	if data[i] == '{' {
		closer = '}'
	}
	i = Space(data, i+1)
	if i < len(data) && data[i] == closer {
		return i + 1, true
	}
	for {
		var ok bool
		if closer == '}' {
			if i >= len(data) || data[i] != '"' {
				return i, false
			}
			if i, ok = String(data, i); !ok {
				return i, false
			}
			i = Space(data, i)
			if i >= len(data) || data[i] != ':' {
				return i, false
			}
			i = Space(data, i+1)
		}
		if i, ok = Value(data, i, depth, maxDepth); !ok {
			return i, false
		}
		i = Space(data, i)
		if i >= len(data) {
			return i, false
		}
		switch data[i] {
		case ',':
			i = Space(data, i+1)
		case closer:
			return i + 1, true
		default:
			return i, false
		}
	}
}

// String validates the string token starting at data[i] (a quote). Like
// encoding/json it refuses raw control characters and bad escapes but lets
// invalid UTF-8 through.
func String[T Text](data T, i int) (int, bool) {
	i++
	for i < len(data) {
		// Skip eight plain bytes at a time; string bodies are most of a
		// payload.
		for i+8 <= len(data) && PlainWord(Load64(data, i)) {
			i += 8
		}
		if i >= len(data) {
			break
		}
		c := data[i]
		switch {
		case c == '"':
			return i + 1, true
		case c < 0x20:
			return i, false
		case c == '\\':
			i++
			if i >= len(data) {
				return i, false
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if i+4 >= len(data) || !isHex(data[i+1]) || !isHex(data[i+2]) || !isHex(data[i+3]) || !isHex(data[i+4]) {
					return i, false
				}
				i += 5
			default:
				return i, false
			}
		default:
			i++
		}
	}
	return i, false
}

// Literal validates lit (true, false or null) at data[i].
func Literal[T Text](data T, i int, lit string) (int, bool) {
	if len(data)-i < len(lit) || string(data[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

// Number validates -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at data[i].
func Number[T Text](data T, i int) (int, bool) {
	if data[i] == '-' {
		i++
	}
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case i < len(data) && isDigit(data[i]):
		i = digits(data, i)
	default:
		return i, false
	}
	if i < len(data) && data[i] == '.' {
		i++
		if i >= len(data) || !isDigit(data[i]) {
			return i, false
		}
		i = digits(data, i)
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i >= len(data) || !isDigit(data[i]) {
			return i, false
		}
		i = digits(data, i)
	}
	return i, true
}

func digits[T Text](data T, i int) int {
	for i < len(data) && isDigit(data[i]) {
		i++
	}
	return i
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isHex(c byte) bool {
	return isDigit(c) || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

// Load64 reads data[i:i+8] little-endian (the compiler makes it one load).
func Load64[T Text](data T, i int) uint64 {
	d := data[i : i+8]
	return uint64(d[0]) | uint64(d[1])<<8 | uint64(d[2])<<16 | uint64(d[3])<<24 |
		uint64(d[4])<<32 | uint64(d[5])<<40 | uint64(d[6])<<48 | uint64(d[7])<<56
}

// ones and highs drive the "has zero byte" and "has byte less than" bit
// tricks, exact as yes/no answers, that test eight string bytes at once.
const ones, highs = 0x0101010101010101, 0x8080808080808080

// PlainWord reports whether none of the eight bytes in x is a quote, a
// backslash or a control character: bytes a JSON string holds verbatim.
func PlainWord(x uint64) bool {
	quote := x ^ (ones * '"')
	backslash := x ^ (ones * '\\')
	special := (x-ones*0x20)&^x | (quote-ones)&^quote | (backslash-ones)&^backslash
	return special&highs == 0
}

// PlainASCII is PlainWord that also refuses non-ASCII bytes, which
// encoding/json may change when it decodes (invalid UTF-8 becomes U+FFFD).
func PlainASCII(x uint64) bool {
	return x&highs == 0 && PlainWord(x)
}
