package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCommitMsg(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, msg, wantErr string
	}{
		{name: "OK", msg: "feat(seed): orgs and users\n\n# comment from git\n"},
		{name: "ErrNotConventional", msg: "Add seeds\n", wantErr: `the first line "Add seeds" must read`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			file := filepath.Join(t.TempDir(), "COMMIT_EDITMSG")
			if err := os.WriteFile(file, []byte(tt.msg), 0o600); err != nil {
				t.Fatal(err)
			}
			root := newRootCmd(&bytes.Buffer{})
			root.SetArgs([]string{"commit-msg", file})
			err := root.Execute()
			if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("commit-msg = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}
