//go:build ignore

// crr1: connection setup as netperf's TCP_CRR measures it, from a C client,
// one connection at a time on one thread. slimctl bench embeds this file,
// compiles it with the machine's C compiler (cc -O2 -static, or dynamic if
// static linking fails) and runs it in each mode's client namespace.
//
//	crr1 ADDR:PORT SECONDS
//
// ADDR is an IPv4 or IPv6 literal (IPv6 in brackets: [fd00::1]:7203).
// Until SECONDS have passed it loops: socket(), blocking connect(), send a
// 1-byte request, read the 1-byte response, close(). The client closes
// first (the server, slimprobe crrserve -wait-eof, closes once it has read
// the client's FIN), so TIME_WAIT stays on this side, as in TCP_CRR.
// Each connection's latency runs from before socket() to after close().
//
// It prints one JSON object on stdout (a contract with package bench: add
// fields, never rename them): connections, errors and the first error,
// elapsed seconds, connections per second, latency percentiles in
// microseconds (nearest rank), its own CPU time (getrusage), and the
// machine's CPU times from /proc/stat right before and after the loop (the
// CPU time over exactly that window). The fields are package wire's
// CRR1Result (internal/bench/wire), printed by hand; a test checks that
// every one of its JSON names is here. Exit status: 0 if a connection
// succeeded, 1 if none did (the JSON is printed all the same) or
// /proc/stat could not be read, 2 on usage errors.
//
// Plain POSIX and Linux system calls only (inet_pton, no getaddrinfo), so
// that a static glibc binary needs no NSS modules at run time.

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

// maxFailing: stop early when more than this many connections failed and
// failures outnumber successes (the server is gone; say so, do not spin).
#define MAX_FAILING 100

static char first_error[256];
static long errors;

static uint64_t now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fail(const char *what, int err) {
	errors++;
	if (first_error[0] == '\0') {
		if (err != 0) {
			snprintf(first_error, sizeof first_error, "%s: %s", what, strerror(err));
		} else {
			snprintf(first_error, sizeof first_error, "%s", what);
		}
	}
}

// parse_addr reads "a.b.c.d:port" or "[v6]:port" into ss.
static int parse_addr(const char *arg, struct sockaddr_storage *ss, socklen_t *len) {
	char host[128];
	const char *port;
	memset(ss, 0, sizeof *ss);
	if (arg[0] == '[') {
		const char *end = strchr(arg, ']');
		if (end == NULL || end[1] != ':' || (size_t)(end - arg - 1) >= sizeof host) {
			return -1;
		}
		memcpy(host, arg + 1, end - arg - 1);
		host[end - arg - 1] = '\0';
		port = end + 2;
	} else {
		const char *colon = strrchr(arg, ':');
		if (colon == NULL || (size_t)(colon - arg) >= sizeof host) {
			return -1;
		}
		memcpy(host, arg, colon - arg);
		host[colon - arg] = '\0';
		port = colon + 1;
	}
	char *endp;
	errno = 0;
	long p = strtol(port, &endp, 10);
	if (errno != 0 || *port == '\0' || *endp != '\0' || p < 1 || p > 65535) {
		return -1;
	}
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	if (arg[0] != '[' && inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)p);
		*len = sizeof *sin;
		return 0;
	}
	if (arg[0] == '[' && inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)p);
		*len = sizeof *sin6;
		return 0;
	}
	return -1;
}

// connect_blocking is connect(2) on a blocking socket. A signal may cut
// it short with EINTR while the handshake goes on: then wait until the
// socket is writable and take the handshake's result from SO_ERROR.
static int connect_blocking(int fd, const struct sockaddr *sa, socklen_t len) {
	if (connect(fd, sa, len) == 0) {
		return 0;
	}
	if (errno != EINTR) {
		return -1;
	}
	struct pollfd pfd = {.fd = fd, .events = POLLOUT};
	int n;
	do {
		n = poll(&pfd, 1, -1);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		return -1;
	}
	int soerr = 0;
	socklen_t sl = sizeof soerr;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) {
		return -1;
	}
	if (soerr != 0) {
		errno = soerr;
		return -1;
	}
	return 0;
}

// one is one connection: 0 on success, -1 after recording the error.
static int one(const struct sockaddr *sa, socklen_t len) {
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fail("socket", errno);
		return -1;
	}
	if (connect_blocking(fd, sa, len) < 0) {
		fail("connect", errno);
		close(fd);
		return -1;
	}
	char b = 0;
	ssize_t n;
	do {
		n = send(fd, &b, 1, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n != 1) {
		fail("send", n < 0 ? errno : 0);
		close(fd);
		return -1;
	}
	do {
		n = read(fd, &b, 1);
	} while (n < 0 && errno == EINTR);
	if (n != 1) {
		if (n == 0) {
			fail("read: the server closed before its response", 0);
		} else {
			fail("read", errno);
		}
		close(fd);
		return -1;
	}
	if (close(fd) < 0) {
		fail("close", errno);
		return -1;
	}
	return 0;
}

static int cmp_u64(const void *a, const void *b) {
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

// pct is the nearest-rank percentile p of the n sorted values, in µs.
static double pct(const uint64_t *v, size_t n, double p) {
	if (n == 0) {
		return 0;
	}
	double r = p * (double)n;
	size_t i = (size_t)r;
	if ((double)i < r) {
		i++; // ceil
	}
	if (i > 0) {
		i--;
	}
	if (i >= n) {
		i = n - 1;
	}
	return (double)v[i] / 1e3;
}

// cpu_times are the machine's CPU times in USER_HZ ticks, /proc/stat's
// first line: "cpu  user nice system idle iowait irq softirq steal guest
// guest_nice" (wire.CPUTimes; guest and guest_nice are counted in user and
// nice already).
struct cpu_times {
	unsigned long long user, nice, system, idle, iowait, irq, softirq, steal;
};

// read_cpu_times reads t from /proc/stat: 0, or -1 if it cannot. Older
// kernels print fewer fields (the missing ones stay zero); user, nice,
// system and idle must be there.
static int read_cpu_times(struct cpu_times *t) {
	memset(t, 0, sizeof *t);
	FILE *f = fopen("/proc/stat", "re");
	if (f == NULL) {
		return -1;
	}
	int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &t->user, &t->nice, &t->system, &t->idle, &t->iowait,
	               &t->irq, &t->softirq, &t->steal);
	fclose(f);
	return n >= 4 ? 0 : -1;
}

// json_cpu_times prints t as a JSON object.
static void json_cpu_times(const struct cpu_times *t) {
	printf("{\"user\":%llu,\"nice\":%llu,\"system\":%llu,\"idle\":%llu,\"iowait\":%llu,\"irq\":%llu,\"softirq\":%llu,"
	       "\"steal\":%llu}",
	       t->user, t->nice, t->system, t->idle, t->iowait, t->irq, t->softirq, t->steal);
}

// json_string prints s as a JSON string.
static void json_string(const char *s) {
	putchar('"');
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			printf("\\%c", c);
		} else if (c < 0x20) {
			printf("\\u%04x", c);
		} else {
			putchar(c);
		}
	}
	putchar('"');
}

static double tv_seconds(struct timeval tv) { return (double)tv.tv_sec + (double)tv.tv_usec / 1e6; }

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: %s ADDR:PORT SECONDS\n", argv[0]);
		return 2;
	}
	struct sockaddr_storage ss;
	socklen_t len;
	if (parse_addr(argv[1], &ss, &len) < 0) {
		fprintf(stderr, "crr1: bad address %s: want a.b.c.d:port or [v6]:port\n", argv[1]);
		return 2;
	}
	char *endp;
	double seconds = strtod(argv[2], &endp);
	if (*argv[2] == '\0' || *endp != '\0' || !(seconds > 0) || seconds > 86400) {
		fprintf(stderr, "crr1: bad duration %s: want seconds, more than 0\n", argv[2]);
		return 2;
	}

	size_t cap = 1 << 16, n = 0;
	uint64_t *lat = malloc(cap * sizeof *lat);
	if (lat == NULL) {
		fprintf(stderr, "crr1: out of memory\n");
		return 1;
	}
	struct cpu_times cpu_start, cpu_end;
	if (read_cpu_times(&cpu_start) < 0) {
		fprintf(stderr, "crr1: cannot read the CPU times in /proc/stat\n");
		return 1;
	}
	uint64_t start = now_ns(), stop = start + (uint64_t)(seconds * 1e9), t1 = start;
	for (;;) {
		uint64_t t0 = now_ns();
		int rc = one((struct sockaddr *)&ss, len);
		t1 = now_ns();
		if (rc == 0) {
			if (n == cap) {
				uint64_t *more = realloc(lat, 2 * cap * sizeof *lat);
				if (more == NULL) {
					fail("out of memory for latencies", 0);
					break;
				}
				lat = more;
				cap *= 2;
			}
			lat[n++] = t1 - t0;
		} else if (errors > MAX_FAILING && (size_t)errors > n) {
			break; // mostly failing: stop, and say so
		}
		if (t1 >= stop) {
			break;
		}
	}
	if (read_cpu_times(&cpu_end) < 0) {
		fprintf(stderr, "crr1: cannot read the CPU times in /proc/stat\n");
		return 1;
	}
	double elapsed = (double)(t1 - start) / 1e9;

	qsort(lat, n, sizeof *lat, cmp_u64);
	double sum = 0;
	for (size_t i = 0; i < n; i++) {
		sum += (double)lat[i];
	}
	struct rusage ru;
	memset(&ru, 0, sizeof ru);
	getrusage(RUSAGE_SELF, &ru);

	printf("{\"mode\":\"crr1\",\"addr\":");
	json_string(argv[1]);
	printf(",\"connections\":%zu,\"errors\":%ld,\"firstError\":", n, errors);
	json_string(first_error);
	printf(",\"seconds\":%.6f,\"cps\":%.3f", elapsed, elapsed > 0 ? (double)n / elapsed : 0.0);
	printf(",\"p50Us\":%.3f,\"p90Us\":%.3f,\"p99Us\":%.3f,\"meanUs\":%.3f,\"minUs\":%.3f,\"maxUs\":%.3f",
	       pct(lat, n, 0.50), pct(lat, n, 0.90), pct(lat, n, 0.99), n > 0 ? sum / (double)n / 1e3 : 0.0,
	       n > 0 ? (double)lat[0] / 1e3 : 0.0, n > 0 ? (double)lat[n - 1] / 1e3 : 0.0);
	printf(",\"userSeconds\":%.6f,\"systemSeconds\":%.6f", tv_seconds(ru.ru_utime), tv_seconds(ru.ru_stime));
	printf(",\"cpuStart\":");
	json_cpu_times(&cpu_start);
	printf(",\"cpuEnd\":");
	json_cpu_times(&cpu_end);
	printf("}\n");
	free(lat);
	if (fflush(stdout) != 0) {
		return 1;
	}
	return n > 0 ? 0 : 1;
}
