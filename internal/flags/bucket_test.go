package flags

import (
	"testing"

	"github.com/google/uuid"
)

// TestBucketStable pins the rollout hash: a change here moves subjects in or out of every
// running rollout. The values were cross-checked with an independent implementation of
// fmix64(FNV-1a-64(key ‖ id)) mod 100.
func TestBucketStable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		key  string
		id   string
		want uint64
	}{
		{"UUIDv7", "chat.streaming_v2", "0190d5a8-7c3e-7b2a-9f1e-3c4d5e6f7a8b", 19},
		{"NeighbouringUUIDv7", "chat.streaming_v2", "0190d5a8-7c3e-7b2a-9f1e-3c4d5e6f7a8c", 49},
		{"SmallID", "billing.new_invoices", "00000000-0000-0000-0000-000000000001", 41},
		{"MaxID", "a", "ffffffff-ffff-ffff-ffff-ffffffffffff", 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := bucket(tt.key, uuid.MustParse(tt.id)); got != tt.want {
				t.Errorf("bucket(%q, %s) = %d, want %d", tt.key, tt.id, got, tt.want)
			}
		})
	}
}
