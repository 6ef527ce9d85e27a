package token

// DisableVerifiedCache makes s check the signature of every token, to measure that path.
func DisableVerifiedCache(s *Service) { s.verified = nil }
