/* SPDX-License-Identifier: MIT */
/*
 * http_test_server.h: starts tests/unit/infra/http_test_server.py (a loopback HTTP/1.1 server: /echo, /status/N,
 * /slow, /big, /redirect, /drop, /count) as a child of the test, which it never outlives, and builds URLs on it.
 * For the unit tests of the outbound HTTP client and of the modules that call providers through it.
 */
#ifndef TEST_HTTP_TEST_SERVER_H
#define TEST_HTTP_TEST_SERVER_H

#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t test_server_pid = -1;
static int test_server_port;

/* The URL of path on the test server, in one of 16 static buffers per thread (used round-robin). */
static const char *test_server_url(const char *path)
{
    static __thread char bufs[16][256];
    static __thread unsigned next;
    char *buf = bufs[next++ % 16];
    snprintf(buf, sizeof(bufs[0]), "http://127.0.0.1:%d%s", test_server_port, path);
    return buf;
}

/* Starts the server and waits until it listens. Returns 0 or -1. */
static int test_server_start(void)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* the server never outlives a crashed or timed-out test */
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execlp("python3", "python3", SETTLED_SOURCE_DIR "/tests/unit/infra/http_test_server.py", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    test_server_pid = pid;
    FILE *fp = fdopen(fds[0], "r");
    char line[100];
    int ok =
        fp != NULL && fgets(line, sizeof(line), fp) != NULL && sscanf(line, "listening %d", &test_server_port) == 1;
    if (fp != NULL)
        fclose(fp);
    return ok ? 0 : -1;
}

static void test_server_stop(void)
{
    if (test_server_pid > 0) {
        kill(test_server_pid, SIGTERM);
        waitpid(test_server_pid, NULL, 0);
        test_server_pid = -1;
    }
}

#endif
