package jobs_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// cpuMeter adds up the CPU time a benchmark's work costs on the machine: this process,
// the PostgreSQL backends of the benchmark's database and the Redis server. On a shared
// machine the rates move with everyone's load; the CPU a job costs much less so. The
// backends are read from /proc (PostgreSQL on this machine) at the end, so they must
// still be connected then; Redis's figure includes what others asked of it meanwhile.
type cpuMeter struct {
	self, redis time.Duration
}

// cpuTick is the kernel's clock tick of /proc/<pid>/stat (USER_HZ, 100 on Linux).
const cpuTick = 10 * time.Millisecond

func startCPU(b *testing.B, rdb redis.UniversalClient) cpuMeter {
	b.Helper()
	return cpuMeter{self: selfCPU(), redis: redisCPU(b, rdb)}
}

// stop returns the CPU spent since startCPU by this process, by the backends of pool's
// database and by Redis.
func (m cpuMeter) stop(b *testing.B, pool *pgxpool.Pool, rdb redis.UniversalClient) (self, pg, rds time.Duration) {
	b.Helper()
	rows, err := pool.Query(context.Background(), `SELECT pid FROM pg_stat_activity WHERE datname = current_database()`)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			b.Fatal(err)
		}
		pg += procCPU(strconv.Itoa(pid))
	}
	return selfCPU() - m.self, pg, redisCPU(b, rdb) - m.redis
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the user and system time of process pid; 0 when /proc cannot tell.
func procCPU(pid string) time.Duration {
	raw, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	// The fields after the command (in parentheses, which may contain spaces): utime and
	// stime are the 12th and 13th of them.
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	user, _ := strconv.ParseInt(f[11], 10, 64)
	sys, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(user+sys) * cpuTick
}

func redisCPU(b *testing.B, rdb redis.UniversalClient) time.Duration {
	b.Helper()
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for line := range strings.SplitSeq(info, "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		if k == "used_cpu_sys" || k == "used_cpu_user" {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}
