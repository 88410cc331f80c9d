package config

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBindNATSReadsOnlyTheNATSSettings(t *testing.T) {
	dir := t.TempDir()
	file := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	creds, nkey, cert, key := file("u.creds"), file("u.nk"), file("c.pem"), file("k.pem")
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    NATS
		wantErr []string
	}{
		{name: "defaults, no Azure settings needed", want: NATS{URL: "nats://127.0.0.1:4222", URLDefaulted: true}},
		{name: "environment", env: map[string]string{"NATS_URL": "nats://a:4222"}, want: NATS{URL: "nats://a:4222"}},
		{name: "flag beats environment", args: []string{"--nats-url", "nats://b:4222"},
			env: map[string]string{"NATS_URL": "nats://a:4222"}, want: NATS{URL: "nats://b:4222"}},
		{name: "context from the environment, config dir from XDG_CONFIG_HOME",
			env:  map[string]string{"NATS_CONTEXT": "prod", "XDG_CONFIG_HOME": "/xdg", "HOME": "/home/op"},
			want: NATS{URL: "nats://127.0.0.1:4222", URLDefaulted: true, Context: "prod", ConfigDir: "/xdg"}},
		{name: "--context beats NATS_CONTEXT, config dir from HOME", args: []string{"--context", "staging"},
			env:  map[string]string{"NATS_CONTEXT": "prod", "HOME": "/home/op"},
			want: NATS{URL: "nats://127.0.0.1:4222", URLDefaulted: true, Context: "staging", ConfigDir: filepath.Join("/home/op", ".config")}},
		{name: "every credential and TLS file",
			args: []string{"--nats-creds", creds, "--nats-nkey", nkey, "--nats-cert", cert, "--nats-key", key},
			env:  map[string]string{"NATS_USER": "alice", "NATS_PASSWORD": "hunter2"},
			want: NATS{URL: "nats://127.0.0.1:4222", URLDefaulted: true, User: "alice", Password: "hunter2",
				CredsFile: creds, NKeyFile: nkey, CertFile: cert, KeyFile: key}},
		{name: "token", env: map[string]string{"NATS_TOKEN": "t0ken"},
			want: NATS{URL: "nats://127.0.0.1:4222", URLDefaulted: true, Token: "t0ken"}},
		{name: "invalid named", env: map[string]string{"NATS_URL": "http://x"}, wantErr: []string{"NATS_URL"}},
		{name: "every invalid setting in one error",
			args: []string{"--nats-cert", cert, "--context", "../x"},
			env: map[string]string{"NATS_URL": "http://x", "NATS_PASSWORD": "hunter2", "NATS_CA": "/nonexistent/ca.pem",
				"NATS_NKEY": "/nonexistent/u.nk"},
			wantErr: []string{"NATS_URL", "--context", "NATS_PASSWORD", "needs --nats-user", "NATS_CA", "NATS_NKEY",
				"--nats-cert", "needs --nats-key"}},
		{name: "token and user", env: map[string]string{"NATS_TOKEN": "t0ken", "NATS_USER": "alice", "NATS_PASSWORD": "pw"},
			wantErr: []string{"NATS_TOKEN", "cannot be combined with NATS_USER"}},
		{name: "key without cert", args: []string{"--nats-key", key}, wantErr: []string{"--nats-key", "needs --nats-cert"}},
		{name: "user without password", args: []string{"--nats-user", "alice"}, wantErr: []string{"--nats-user", "needs --nats-password"}},
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
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("got no error, want one naming %v", tt.wantErr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("got error %q, want it to contain %q", err, w)
					}
				}
				if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "t0ken") {
					t.Errorf("error %q shows a secret", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("resolve: %v", err)
			}
			if got != tt.want {
				t.Errorf("got %#v, want %#v", fieldsOfNATS(got), fieldsOfNATS(tt.want))
			}
		})
	}
}

// fieldsOfNATS shows secrets too, which NATS's own formatting hides.
func fieldsOfNATS(n NATS) string {
	type plain NATS
	return fmt.Sprintf("%+v", plain(n))
}

func TestNATSStringHidesSecrets(t *testing.T) {
	n := NATS{URL: "nats://bob:pw1@127.0.0.1:4222", Password: "hunter2", Token: "t0ken"}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		got := fmt.Sprintf(format, n)
		for _, secret := range []string{"hunter2", "t0ken", "pw1"} {
			if strings.Contains(got, secret) {
				t.Errorf("%s: got %q, which shows %q", format, got, secret)
			}
		}
	}
}
