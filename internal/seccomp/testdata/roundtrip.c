// roundtrip measures the floor of a seccomp user notification round trip
// on this kernel and machine, for BenchmarkNotifRoundTrip. A target
// process makes N trapped connect() calls (without an address: once let
// through, the kernel answers EINVAL at once); a supervisor answers each.
//
//   roundtrip supervise MODE PINNED N
//       forks the target and answers it from C: the floor.
//       MODE 0: RECV, SEND CONTINUE
//       MODE 1: RECV, ADDFD (SETFD, a socket over the caller's), SEND
//               CONTINUE, as a swapped connect does
//       MODE 2: RECV, ADDFD with SETFD|SEND (the fd installed and the call
//               answered in one ioctl, one round trip): what trapping
//               socket() and answering it with a host socket would cost
//       PINNED 1: both processes on CPU 0 (0: free to move)
//   roundtrip target N
//       only the target, for a supervisor written in Go: it sends its
//       notification fd over fd 3 (SCM_RIGHTS), waits for one byte on it,
//       then makes its calls.
//
// The target prints one line: "ns_per_call <float>". The supervisor sets
// SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (Linux 6.6), as slimd does.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP 1
#endif

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void pin(void)
{
	cpu_set_t s;

	CPU_ZERO(&s);
	CPU_SET(0, &s);
	sched_setaffinity(0, sizeof(s), &s);
}

static int send_fd(int sock, int fd)
{
	char c = 'f', cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec io = {&c, 1};
	struct msghdr m = {0};
	struct cmsghdr *h;

	m.msg_iov = &io;
	m.msg_iovlen = 1;
	m.msg_control = cbuf;
	m.msg_controllen = sizeof(cbuf);
	h = CMSG_FIRSTHDR(&m);
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(h), &fd, sizeof(int));
	return sendmsg(sock, &m, 0) == 1 ? 0 : -1;
}

static int recv_fd(int sock)
{
	char c, cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec io = {&c, 1};
	struct msghdr m = {0};
	int fd;

	m.msg_iov = &io;
	m.msg_iovlen = 1;
	m.msg_control = cbuf;
	m.msg_controllen = sizeof(cbuf);
	if (recvmsg(sock, &m, 0) != 1 || !CMSG_FIRSTHDR(&m))
		return -1;
	memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(int));
	return fd;
}

// target installs the filter, hands over the fd on sock and, after a byte
// on sock, makes n trapped calls.
static int target(int sock, int n)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_connect, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {4, f};
	int l, fd;
	char c;
	double t0;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	l = syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
	if (l < 0 || send_fd(sock, l) < 0) {
		perror("seccomp listener");
		return 1;
	}
	close(l);
	if (read(sock, &c, 1) != 1)
		return 1;
	t0 = now();
	for (int i = 0; i < n; i++)
		connect(fd, NULL, 0);
	printf("ns_per_call %.1f\n", (now() - t0) / n * 1e9);
	fflush(stdout);
	return 0;
}

static int supervise(int mode, int n)
{
	int sv[2], l, sock, status;
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		return 1;
	pid = fork();
	if (pid == 0) {
		close(sv[0]);
		_exit(target(sv[1], n));
	}
	close(sv[1]);
	l = recv_fd(sv[0]);
	sock = socket(AF_INET, SOCK_STREAM, 0);
	if (l < 0 || ioctl(l, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, 0) < 0) {
		perror("listener");
		return 1;
	}
	write(sv[0], "g", 1);
	for (int i = 0; i < n; i++) {
		struct seccomp_notif req;
		struct seccomp_notif_resp resp = {0};

		memset(&req, 0, sizeof(req));
		if (ioctl(l, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0) {
			if (errno == EINTR) {
				i--;
				continue;
			}
			perror("recv");
			return 1;
		}
		if (mode == 1 || mode == 2) {
			struct seccomp_notif_addfd a = {
				.id = req.id,
				.flags = SECCOMP_ADDFD_FLAG_SETFD,
				.srcfd = sock,
				.newfd = req.data.args[0],
			};

			if (mode == 2)
				a.flags |= SECCOMP_ADDFD_FLAG_SEND;
			if (ioctl(l, SECCOMP_IOCTL_NOTIF_ADDFD, &a) < 0) {
				perror("addfd");
				return 1;
			}
			if (mode == 2)
				continue; /* answered */
		}
		resp.id = req.id;
		resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
		if (ioctl(l, SECCOMP_IOCTL_NOTIF_SEND, &resp) < 0) {
			perror("send");
			return 1;
		}
	}
	waitpid(pid, &status, 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "supervise")) {
		if (atoi(argv[3]))
			pin();
		return supervise(atoi(argv[2]), atoi(argv[4]));
	}
	if (argc == 3 && !strcmp(argv[1], "target"))
		return target(3, atoi(argv[2]));
	fprintf(stderr, "usage: roundtrip supervise MODE PINNED N | roundtrip target N\n");
	return 2;
}
