// Benchmark traffic for bench/datapath: a TCP sink server, a new-connection-rate client, a bulk sender.
//   tcpbench server <port>                   accepts and drains connections until killed
//   tcpbench connrate <ip> <port> <seconds>  prints connections/s (connect + RST close), failures, CPU seconds, connections per CPU second
//   tcpbench bulk <ip> <port> <seconds>      prints bits/s sent on one connection (CUBIC), CPU seconds, bits per CPU second
// The CPU seconds are this process's (user + system): on a veth pair most of both stacks' packet
// processing, tc programs included, runs in the sender's context, so it measures cost, not share.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static struct sockaddr_in addr_of(const char *ip, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
		fprintf(stderr, "tcpbench: invalid address %s\n", ip);
		exit(2);
	}
	return a;
}

static int serve(int port)
{
	static char buf[1 << 17];
	int one = 1;
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = INADDR_ANY };
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s, 4096) < 0) {
		perror("tcpbench: listen");
		return 1;
	}
	printf("listening\n");
	fflush(stdout);
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0)
			continue;
		while (read(c, buf, sizeof(buf)) > 0)
			;
		close(c);
	}
}

static int connrate(const char *ip, int port, double seconds)
{
	struct sockaddr_in a = addr_of(ip, port);
	struct linger lg = { .l_onoff = 1, .l_linger = 0 }; /* RST on close: no TIME_WAIT to run out of ports */
	long n = 0, failed = 0;
	double start = now(), end = start + seconds, cpu = cpu_seconds();
	while (now() < end) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		if (connect(s, (struct sockaddr *)&a, sizeof(a)) == 0)
			n++;
		else
			failed++;
		close(s);
	}
	cpu = cpu_seconds() - cpu;
	printf("%.1f %ld %.4f %.1f\n", n / (now() - start), failed, cpu, cpu > 0 ? n / cpu : 0);
	return 0;
}

static int bulk(const char *ip, int port, double seconds)
{
	static char buf[1 << 17];
	struct sockaddr_in a = addr_of(ip, port);
	int s = socket(AF_INET, SOCK_STREAM, 0);
	double sent = 0, start, end, cpu;
	/* Loss-based CUBIC, not the machine's default (often BBR): BBR paces a stream by its model of
	 * the path, whose estimates move from sample to sample more than any datapath cost does. */
	if (setsockopt(s, IPPROTO_TCP, TCP_CONGESTION, "cubic", strlen("cubic")) < 0)
		perror("tcpbench: TCP_CONGESTION cubic (keeping the default)");
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("tcpbench: connect");
		return 1;
	}
	start = now();
	end = start + seconds;
	cpu = cpu_seconds();
	while (now() < end) {
		ssize_t w = write(s, buf, sizeof(buf));
		if (w < 0) {
			perror("tcpbench: write");
			return 1;
		}
		sent += w;
	}
	cpu = cpu_seconds() - cpu;
	printf("%.0f %.4f %.0f\n", sent * 8 / (now() - start), cpu, cpu > 0 ? sent * 8 / cpu : 0);
	close(s);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "server"))
		return serve(atoi(argv[2]));
	if (argc == 5 && !strcmp(argv[1], "connrate"))
		return connrate(argv[2], atoi(argv[3]), atof(argv[4]));
	if (argc == 5 && !strcmp(argv[1], "bulk"))
		return bulk(argv[2], atoi(argv[3]), atof(argv[4]));
	fprintf(stderr, "usage: tcpbench server <port> | connrate|bulk <ip> <port> <seconds>\n");
	return 2;
}
