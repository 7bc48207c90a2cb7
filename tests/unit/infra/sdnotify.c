/* SPDX-License-Identifier: MIT */
/* Tests of gateway/infra/sdnotify.c: the datagram reaches a socket named by NOTIFY_SOCKET (a path or an abstract
 * name), and without NOTIFY_SOCKET nothing is sent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include "sdnotify.h"

/* A datagram socket bound to name (a path, or '@' + an abstract name). */
static int listen_on(const char *name)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t len = strlen(name);
    memcpy(addr.sun_path, name, len);
    if (name[0] == '@')
        addr.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    if (bind(fd, (struct sockaddr *)&addr, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) != 0)
        fail_msg("bind %s: %s", name, strerror(errno));
    return fd;
}

static void expect_received(int fd, const char *want)
{
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
    if (n < 0)
        fail_msg("nothing received (%s), expected %s", strerror(errno), want);
    buf[n] = '\0';
    assert_string_equal(buf, want);
}

static void test_path_socket(void **state)
{
    char dir[] = "/tmp/sdnotify-test.XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/notify", dir);
    int fd = listen_on(path);
    setenv("NOTIFY_SOCKET", path, 1);
    assert_int_equal(gw_sd_notify("READY=1"), 1);
    expect_received(fd, "READY=1");
    assert_int_equal(gw_sd_notify("STOPPING=1"), 1);
    expect_received(fd, "STOPPING=1");
    close(fd);
    unlink(path);
    rmdir(dir);
    /* named but gone: an error, not a crash */
    assert_int_equal(gw_sd_notify("READY=1"), -1);
    unsetenv("NOTIFY_SOCKET");
}

static void test_abstract_socket(void **state)
{
    char name[64];
    snprintf(name, sizeof(name), "@settled-sdnotify-test-%d", (int)getpid());
    int fd = listen_on(name);
    setenv("NOTIFY_SOCKET", name, 1);
    assert_int_equal(gw_sd_notify("READY=1"), 1);
    expect_received(fd, "READY=1");
    close(fd);
    unsetenv("NOTIFY_SOCKET");
}

static void test_not_under_systemd(void **state)
{
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(gw_sd_notify("READY=1"), 0);
    setenv("NOTIFY_SOCKET", "", 1);
    assert_int_equal(gw_sd_notify("READY=1"), 0);
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    assert_int_equal(gw_sd_notify("READY=1"), -1);
    unsetenv("NOTIFY_SOCKET");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_socket),
        cmocka_unit_test(test_abstract_socket),
        cmocka_unit_test(test_not_under_systemd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
