package account_test

import (
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/auth/account"
)

func TestVerifyPassword(t *testing.T) {
	cfg := testConfig()
	phc := account.HashPassword(cfg, goodPassword)
	other := cfg
	other.Argon2Memory, other.Argon2Time = 9*1024, 2
	otherPHC := account.HashPassword(other, goodPassword)
	salt, key := strings.Split(phc, "$")[4], strings.Split(phc, "$")[5]

	tests := []struct {
		name        string
		password    string
		phc         string
		wantOK      bool
		wantCurrent bool
		wantErr     bool
	}{
		{"OK", goodPassword, phc, true, true, false},
		{"OKOtherParametersNotCurrent", goodPassword, otherPHC, true, false, false},
		{"ErrWrongPassword", goodPassword + " ", phc, false, true, false},
		{"ErrOtherParametersWrongPassword", "x", otherPHC, false, false, false},
		{"ErrMalformedEmpty", goodPassword, "", false, false, true},
		{"ErrMalformedArgon2i", goodPassword, strings.Replace(phc, "$argon2id$", "$argon2i$", 1), false, false, true},
		{"ErrMalformedVersion", goodPassword, strings.Replace(phc, "$v=19$", "$v=16$", 1), false, false, true},
		{"ErrMalformedParameters", goodPassword, "$argon2id$v=19$m=8192,t=1$" + salt + "$" + key, false, false, true},
		{"ErrMalformedParameterSpacing", goodPassword, "$argon2id$v=19$m= 8192,t=1,p=1$" + salt + "$" + key, false, false, true},
		{"ErrMemoryTooLarge", goodPassword, "$argon2id$v=19$m=8388608,t=1,p=1$" + salt + "$" + key, false, false, true},
		{"ErrNoLanes", goodPassword, "$argon2id$v=19$m=8192,t=1,p=0$" + salt + "$" + key, false, false, true},
		{"ErrNoPasses", goodPassword, "$argon2id$v=19$m=8192,t=0,p=1$" + salt + "$" + key, false, false, true},
		{"ErrPaddedSalt", goodPassword, "$argon2id$v=19$m=8192,t=1,p=1$" + salt + "==$" + key, false, false, true},
		{"ErrShortKey", goodPassword, "$argon2id$v=19$m=8192,t=1,p=1$" + salt + "$" + key[:10], false, false, true},
		{"ErrExtraField", goodPassword, phc + "$x", false, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, current, err := account.VerifyPassword(cfg, tt.password, tt.phc)
			if ok != tt.wantOK || current != tt.wantCurrent || (err != nil) != tt.wantErr {
				t.Errorf("VerifyPassword = %v, %v, %v; want %v, %v, error %v", ok, current, err, tt.wantOK, tt.wantCurrent, tt.wantErr)
			}
		})
	}
	t.Run("OKSaltIsRandom", func(t *testing.T) {
		if again := account.HashPassword(cfg, goodPassword); again == phc {
			t.Error("two hashes of one password are equal: the salt is not random")
		}
	})
}

// FuzzParsePHC feeds the stored-hash parser arbitrary strings: it must never panic, and a
// string it accepts must have parameters within the bounds that keep a login cheap.
func FuzzParsePHC(f *testing.F) {
	f.Add(account.HashPassword(testConfig(), goodPassword))
	f.Add("$argon2id$v=19$m=65536,t=2,p=2$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g")
	f.Add("$argon2id$v=19$m=4294967295,t=4294967295,p=255$$")
	f.Add("$$$$$")
	f.Fuzz(func(t *testing.T, s string) {
		_ = account.ParsePHC(s)
	})
}

// BenchmarkHashPassword measures one hash with the default parameters (64 MiB, 2 passes,
// 2 lanes): the CPU and memory each sign-up and login costs.
func BenchmarkHashPassword(b *testing.B) {
	cfg := account.DefaultConfig()
	b.ReportAllocs()
	for b.Loop() {
		account.HashPassword(cfg, goodPassword)
	}
}
