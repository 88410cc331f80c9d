package config

import (
	"flag"
	"io"
	"strings"
	"testing"
)

func TestBindNATSReadsOnlyTheNATSSettings(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    NATS
		wantErr string
	}{
		{name: "defaults, no Azure settings needed", want: NATS{URL: "nats://127.0.0.1:4222"}},
		{name: "environment", env: map[string]string{"NATS_URL": "nats://a:4222"}, want: NATS{URL: "nats://a:4222"}},
		{name: "flag beats environment", args: []string{"--nats-url", "nats://b:4222"},
			env: map[string]string{"NATS_URL": "nats://a:4222"}, want: NATS{URL: "nats://b:4222"}},
		{name: "invalid named", env: map[string]string{"NATS_URL": "http://x"}, wantErr: "NATS_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("tool", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			resolve := BindNATS(fs, func(k string) string { return tt.env[k] })
			if err := fs.Parse(tt.args); err != nil {
				t.Fatalf("parse: %v", err)
			}
			got, err := resolve()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("resolve: %v", err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
