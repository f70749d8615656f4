/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cmd-serve.c - thinvol serve: parse the options and run the daemon
 * (src/server/serve.c).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/parse.h"
#include "server/nbds.h"
#include "server/serve.h"

/* A count for a limit option: 1 to max. */
static int limit_arg(const struct cli_cmd *cmd, const char *opt,
		     const char *arg, unsigned int max, unsigned int *out)
{
	uint64_t v;

	if (parse_u64(arg, &v) < 0 || !v || v > max)
		return cli_usage(cmd, "%s %s: want a number from 1 to %u", opt,
				 arg, max);
	*out = (unsigned int) v;
	return 0;
}

static int cmd_serve(const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"socket", required_argument, NULL, 'S'},
	    {"listen", required_argument, NULL, 'l'},
	    {"tls-psk", required_argument, NULL, 'P'},
	    {"tls-cert", required_argument, NULL, 'C'},
	    {"tls-key", required_argument, NULL, 'K'},
	    {"tls-ca", required_argument, NULL, 'A'},
	    {"tls", required_argument, NULL, 't'},
	    {"foreground", no_argument, NULL, 'f'},
	    {"pidfile", required_argument, NULL, 'p'},
	    {"syslog", no_argument, NULL, 'y'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"commit-interval", required_argument, NULL, 'c'},
	    {"allow-unauthenticated", no_argument, NULL, 'U'},
	    {"max-connections", required_argument, NULL, 'M'},
	    {"max-connections-per-peer", required_argument, NULL, 'N'},
	    {"handshake-timeout", required_argument, NULL, 'H'},
	    {"max-memory", required_argument, NULL, 'B'},
	    {NULL, 0, NULL, 0},
	};
	struct serve_opts o = {.log_file = cli_err};
	const char *tls_mode = NULL;
	int c, r;

	while ((c = cli_getopt(cmd, argc, argv,
			       ":S:l:P:C:K:A:t:fp:yvc:M:N:H:B:", opts)) != -1) {
		switch (c) {
		case 'S':
			o.socket = optarg;
			break;
		case 'l':
			o.listen = optarg;
			break;
		case 'P':
			o.tls_psk = optarg;
			break;
		case 'C':
			o.tls_cert = optarg;
			break;
		case 'K':
			o.tls_key = optarg;
			break;
		case 'A':
			o.tls_ca = optarg;
			break;
		case 't':
			tls_mode = optarg;
			break;
		case 'f':
			o.foreground = true;
			break;
		case 'p':
			o.pidfile = optarg;
			break;
		case 'y':
			o.syslog = true;
			break;
		case 'v':
			o.verbose = true;
			break;
		case 'U':
			o.allow_unauthenticated = true;
			break;
		case 'c': {
			char *end;
			unsigned long ms;
			errno = 0;
			ms = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || !ms ||
			    ms > 3600000)
				return cli_usage(cmd,
						 "--commit-interval %s: "
						 "want milliseconds, 1 "
						 "to 3600000",
						 optarg);
			o.commit_interval_ms = (unsigned int) ms;
			break;
		}
		case 'M':
			if (limit_arg(cmd, "--max-connections", optarg,
				      1u << 20, &o.max_connections))
				return EXIT_USAGE;
			break;
		case 'N':
			if (limit_arg(cmd, "--max-connections-per-peer", optarg,
				      1u << 20, &o.max_per_peer))
				return EXIT_USAGE;
			break;
		case 'H':
			if (limit_arg(cmd, "--handshake-timeout", optarg, 3600,
				      &o.handshake_timeout_s))
				return EXIT_USAGE;
			break;
		case 'B':
			if (parse_size(optarg, &o.max_memory) < 0 ||
			    o.max_memory < (1u << 20))
				return cli_usage(cmd,
						 "--max-memory %s: want a "
						 "size of at least 1M",
						 optarg);
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 1)
		return cli_usage(cmd, "needs exactly one POOL");
	o.pool = argv[optind];
	if (o.tls_psk && (o.tls_cert || o.tls_key))
		return cli_usage(cmd, "--tls-psk and --tls-cert exclude each "
				      "other");
	if (!!o.tls_cert != !!o.tls_key)
		return cli_usage(cmd, "--tls-cert and --tls-key go together");
	if (o.tls_ca && !o.tls_cert)
		return cli_usage(cmd, "--tls-ca needs --tls-cert");
	if (tls_mode) {
		if (!strcmp(tls_mode, "require"))
			o.tls = SERVE_TLS_REQUIRE;
		else if (!strcmp(tls_mode, "optional"))
			o.tls = SERVE_TLS_OPTIONAL;
		else
			return cli_usage(cmd,
					 "--tls %s: want 'require' or "
					 "'optional'",
					 tls_mode);
		if (!o.tls_psk && !o.tls_cert)
			return cli_usage(cmd,
					 "--tls %s needs --tls-psk or "
					 "--tls-cert",
					 tls_mode);
	} else if (o.tls_psk || o.tls_cert) {
		o.tls = SERVE_TLS_REQUIRE; /* credentials given: use them */
	}
	if (o.allow_unauthenticated && !o.listen)
		return cli_usage(cmd, "--allow-unauthenticated goes with "
				      "--listen");
	{
		char err[512];

		if (serve_check_opts(&o, err, sizeof(err)) < 0)
			return cli_usage(cmd, "%s", err);
	}
	/* the daemon logged the reason: only the status is left to give */
	r = serve_run(&o);
	return r == -EADDRINUSE ? EXIT_BUSY : cli_exit(r);
}

const struct cli_cmd cli_serve_cmd = {
    "serve",
    "serve POOL [--socket PATH] [--listen ADDR:PORT] [--tls-psk FILE | "
    "--tls-cert FILE --tls-key FILE [--tls-ca FILE]] "
    "[--tls require|optional] [--allow-unauthenticated] [--foreground] "
    "[--pidfile FILE] [--syslog] [--verbose] [--max-connections N] "
    "[--max-connections-per-peer N] [--handshake-timeout SECONDS] "
    "[--max-memory SIZE]",
    "usage: thinvol serve POOL [OPTIONS]\n"
    "\n"
    "Run the daemon that owns the pool: every volume is served as an NBD\n"
    "export named after it (\"#ID\" works too), and every other thinvol\n"
    "command on this pool runs through its control socket while it runs.\n"
    "It holds the pool's lock; SIGTERM or SIGINT stops it cleanly (requests\n"
    "in flight finish, the pool is committed, the sockets are removed).\n"
    "\n"
    "  -S, --socket PATH      the NBD Unix socket (default: POOL.nbd.sock\n"
    "                         beside a pool file's real path;\n"
    "                         /run/thinvol/block-MAJ:MIN.nbd.sock for a\n"
    "                         block device).  The control socket is always\n"
    "                         POOL.ctl.sock (block-MAJ:MIN.ctl.sock under\n"
    "                         /run/thinvol; file-MAJ:MIN-INO.ctl.sock there\n"
    "                         for a file whose path is too long for a\n"
    "                         socket beside it).  Both are mode 0600; only a\n"
    "                         stale socket at the path is replaced\n"
    "  -l, --listen ADDR:PORT also serve NBD over TCP ([IPV6]:PORT, or :PORT\n"
    "                         for every address; PORT 1 to 65535).  TCP\n"
    "                         clients must authenticate: --tls-psk, or\n"
    "                         --tls-cert with --tls-ca, with --tls require\n"
    "      --allow-unauthenticated\n"
    "                         serve TCP clients without that (plaintext,\n"
    "                         --tls optional, or a certificate without\n"
    "                         --tls-ca): anyone who reaches the port may\n"
    "                         read and write every volume\n"
    "      --tls-psk FILE     TLS with pre-shared keys (psktool's format:\n"
    "                         IDENTITY:HEXKEY lines)\n"
    "      --tls-cert FILE    TLS with this X.509 certificate (PEM) ...\n"
    "      --tls-key FILE     ... and its private key\n"
    "      --tls-ca FILE      require client certificates signed by this CA\n"
    "      --tls require|optional\n"
    "                         require: no option but STARTTLS before TLS\n"
    "                         (the default when credentials are given);\n"
    "                         optional: plaintext clients are served too\n"
    "  -f, --foreground       stay in the foreground, logging to stderr\n"
    "                         (otherwise detach once ready, logging to\n"
    "                         syslog)\n"
    "  -p, --pidfile FILE     a regular file of ours, locked while the\n"
    "                         daemon runs (a second daemon given it fails);\n"
    "                         our pid is written once ready.  A symbolic\n"
    "                         link is not followed\n"
    "      --syslog           log to syslog\n"
    "  -v, --verbose          log every connection, option and refused\n"
    "                         request\n"
    "      --commit-interval MS\n"
    "                         commit metadata at least this often (default\n"
    "                         1000)\n"
    "\n"
    "Limits (docs/nbd.md, \"Limits\"): a connection over one closes the "
    "oldest\n"
    "connection still in its handshake, or is refused when there is none.\n"
    "      --max-connections N\n"
    "                         NBD connections at once, Unix and TCP (default\n"
    "                         1024, fewer if RLIMIT_NOFILE is low)\n"
    "      --max-connections-per-peer N\n"
    "                         TCP connections from one address (default 64)\n"
    "      --handshake-timeout SECONDS\n"
    "                         time from connecting to choosing an export,\n"
    "                         TLS included (default 10)\n"
    "      --max-memory SIZE  request buffers of all connections together\n"
    "                         (default a quarter of the RAM, at most 1G);\n"
    "                         each connection takes at most 64M\n"
    "\n"
    "Reach a volume with nbd+unix:///VOLUME?socket=POOL.nbd.sock, e.g.\n"
    "  nbdinfo --list 'nbd+unix://?socket=POOL.nbd.sock'\n"
    "  qemu-img info 'nbd+unix:///VOLUME?socket=POOL.nbd.sock'\n",
    cmd_serve,
};
