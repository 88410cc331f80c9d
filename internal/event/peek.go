package event

import "encoding/json"

// Peek reads userId and action from a payload that failed validation, so a
// dead letter can still say whose request it was. Fields that are missing,
// not strings, or in a payload that is not a JSON object come back empty;
// keys match exactly, as in Decode.
func Peek(data []byte) (userID string, action Action) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return "", ""
	}
	str := func(key string) string {
		var s string
		if err := json.Unmarshal(fields[key], &s); err != nil {
			return ""
		}
		return s
	}
	return str("userId"), Action(str("action"))
}
