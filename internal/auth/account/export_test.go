package account

// SetKDF replaces argon2id, so that tests can count hash computations. Call it before the
// Service is used.
func (s *Service) SetKDF(f func(password, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte) {
	s.hasher.kdf = f
}

// HashPassword hashes password with cfg's parameters.
func HashPassword(cfg Config, password string) string {
	return newHasher(cfg.withDefaults()).hash(password)
}

// VerifyPassword reports whether password matches phc, with cfg's parameters as the
// current ones.
func VerifyPassword(cfg Config, password, phc string) (ok, current bool, err error) {
	return newHasher(cfg.withDefaults()).verify(password, phc)
}

// ParsePHC exposes the PHC parser to fuzzing.
func ParsePHC(s string) error {
	_, _, _, err := parsePHC(s)
	return err
}

// DescribeUserAgent exposes the session naming.
var DescribeUserAgent = describeUserAgent
