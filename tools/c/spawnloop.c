/* The floor for a cold start: N processes started with posix_spawnp in a
 * loop, as fast as libc can. Usage: spawnloop N PROG ARGS...; then waits
 * for a signal (the bench kills it and its children). */
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    long n = atol(argv[1]);
    for (long i = 0; i < n; i++) {
        pid_t pid;
        if (posix_spawnp(&pid, argv[2], NULL, NULL, argv + 2, environ)) return 1;
    }
    for (;;) pause();
}
