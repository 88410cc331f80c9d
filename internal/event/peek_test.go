package event

import "testing"

func TestPeek(t *testing.T) {
	tests := []struct {
		name, payload, wantUser string
		wantAction              Action
	}{
		{"invalid user id still shown", `{"userId":"../admin","action":"follow","siteIds":[]}`, "../admin", Follow},
		{"not JSON", `{"userId":`, "", ""},
		{"not an object", `["a"]`, "", ""},
		{"wrong types", `{"userId":7,"action":["follow"]}`, "", ""},
		{"keys match exactly", `{"USERID":"x","action":"unfollow"}`, "", Unfollow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotUser, gotAction := Peek([]byte(tt.payload))
			if gotUser != tt.wantUser || gotAction != tt.wantAction {
				t.Errorf("Peek(%s): got %q %q, want %q %q", tt.payload, gotUser, gotAction, tt.wantUser, tt.wantAction)
			}
		})
	}
}
