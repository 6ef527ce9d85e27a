package members

// The rules and the token format, for table tests and fuzzing.
var (
	CheckRoleChange = checkRoleChange
	CheckRemoval    = checkRemoval
	ParseToken      = parseToken
	NewToken        = newToken
)
