package errs

import (
	"errors"
	"strings"
)

// UnderPointer returns err with its field pointers moved under prefix (a JSON Pointer),
// for an error about a part of a larger document; any other error is returned as it is.
func UnderPointer(err error, prefix string) error {
	e, ok := errors.AsType[*Error](err)
	if !ok || len(e.Fields) == 0 {
		return err
	}
	fields := make([]FieldError, len(e.Fields))
	for i, f := range e.Fields {
		fields[i] = FieldError{Pointer: prefix + f.Pointer, Message: f.Message}
	}
	what, _, _ := strings.Cut(e.Message, ": ")
	return InvalidFields(what, fields)
}
