/*
 * pause: the process that holds a pod sandbox's namespaces (tritonops' local real node).
 *
 * It does nothing but wait: SIGINT and SIGTERM end it with status 0, SIGCHLD reaps exited children
 * (it is PID 1 of the pod when the pod shares its process namespace), every other signal keeps its
 * default action. `pause -v` prints the version. Built by tritonops.devcluster.images with
 * `gcc -static -Os`, so the image needs no libc.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAUSE_VERSION "3.10-tritonops"

static void on_stop(int sig) {
    (void)sig;
    _exit(0);
}

static void on_child(int sig) {
    int saved = errno;
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static int handle(int sig, void (*fn)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("pause " PAUSE_VERSION);
        return 0;
    }
    if (getpid() != 1) {
        fputs("pause: not running as PID 1\n", stderr);
    }
    if (handle(SIGINT, on_stop, 0) || handle(SIGTERM, on_stop, 0) ||
        handle(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART)) {
        perror("pause: sigaction");
        return 1;
    }
    for (;;) {
        pause();
    }
}
