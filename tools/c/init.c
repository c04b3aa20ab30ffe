/* The floor for an entrypoint: a container init in the fewest lines that
 * do the job (tini's core): block signals, start the command, forward
 * signals to it, reap every child, exit with the command's status. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);
    if (argc < 2) return 2;
    pid_t child = fork();
    if (child == 0) {
        sigprocmask(SIG_UNBLOCK, &all, NULL);
        execvp(argv[1], argv + 1);
        _exit(127);
    }
    for (;;) {
        int sig = 0, status;
        sigwait(&all, &sig);
        if (sig != SIGCHLD) { kill(child, sig); continue; }
        pid_t p;
        while ((p = waitpid(-1, &status, WNOHANG)) > 0)
            if (p == child)
                return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
}
