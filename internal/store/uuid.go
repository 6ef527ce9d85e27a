package store

import (
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
)

// registerUUID makes a connection read and write github.com/google/uuid's UUID and
// NullUUID, the ids of every generated query, as the 16 bytes of PostgreSQL's binary
// uuid. Left to pgx, they go through driver.Valuer and sql.Scanner: each id a string
// formatted and parsed again, and an encode plan that fails (building its error) before
// the one that works; a tenth of a gateway call's allocations and of an ingestion's CPU.
func registerUUID(m *pgtype.Map) {
	t := &pgtype.Type{Name: "uuid", OID: pgtype.UUIDOID, Codec: uuidCodec{}}
	m.RegisterType(t)
	m.RegisterType(&pgtype.Type{Name: "_uuid", OID: pgtype.UUIDArrayOID, Codec: &pgtype.ArrayCodec{ElementType: t}})
	m.RegisterDefaultPgType(uuid.UUID{}, "uuid")
	m.RegisterDefaultPgType(uuid.NullUUID{}, "uuid")
}

// uuidCodec is pgx's uuid codec with binary plans for uuid.UUID and uuid.NullUUID; every
// other value and the text format are pgx's own.
type uuidCodec struct{ pgtype.UUIDCodec }

func (c uuidCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if format == pgtype.BinaryFormatCode {
		switch value.(type) {
		case uuid.UUID:
			return encodeUUID{}
		case uuid.NullUUID:
			return encodeNullUUID{}
		}
	}
	return c.UUIDCodec.PlanEncode(m, oid, format, value)
}

func (c uuidCodec) PlanScan(m *pgtype.Map, oid uint32, format int16, target any) pgtype.ScanPlan {
	if format == pgtype.BinaryFormatCode {
		switch target.(type) {
		case *uuid.UUID:
			return scanUUID{}
		case *uuid.NullUUID:
			return scanNullUUID{}
		}
	}
	return c.UUIDCodec.PlanScan(m, oid, format, target)
}

type encodeUUID struct{}

func (encodeUUID) Encode(value any, buf []byte) ([]byte, error) {
	id := value.(uuid.UUID)
	return append(buf, id[:]...), nil
}

type encodeNullUUID struct{}

func (encodeNullUUID) Encode(value any, buf []byte) ([]byte, error) {
	id := value.(uuid.NullUUID)
	if !id.Valid {
		return nil, nil // NULL
	}
	return append(buf, id.UUID[:]...), nil
}

type scanUUID struct{}

// Scan leaves the target as it is on NULL, as uuid.UUID's sql.Scanner does.
func (scanUUID) Scan(src []byte, dst any) error {
	if src == nil {
		return nil
	}
	if len(src) != 16 {
		return fmt.Errorf("invalid length for uuid: %v", len(src))
	}
	copy(dst.(*uuid.UUID)[:], src)
	return nil
}

type scanNullUUID struct{}

func (scanNullUUID) Scan(src []byte, dst any) error {
	id := dst.(*uuid.NullUUID)
	if src == nil {
		*id = uuid.NullUUID{}
		return nil
	}
	if len(src) != 16 {
		return fmt.Errorf("invalid length for uuid: %v", len(src))
	}
	copy(id.UUID[:], src)
	id.Valid = true
	return nil
}
