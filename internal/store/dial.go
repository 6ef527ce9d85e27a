package store

import (
	"context"
	"errors"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgconn"
)

// errClosedByServer is the cause of a read on a connection the server (or anything
// between) closed.
var errClosedByServer = errors.New("connection closed by the server")

// reportingClose wraps dial so that the end of a connection reads as a *net.OpError, like
// any other network failure, instead of the bare io.EOF (or io.ErrUnexpectedEOF) pgconn
// would return, which nothing can tell from a client's truncated body: errs.Classify then
// answers 503 unavailable, not 500, when PostgreSQL goes away under an open pool.
func reportingClose(dial pgconn.DialFunc) pgconn.DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return closeReportingConn{c}, nil
	}
}

type closeReportingConn struct{ net.Conn }

func (c closeReportingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if errors.Is(err, io.EOF) {
		err = &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: errClosedByServer}
	}
	return n, err
}
