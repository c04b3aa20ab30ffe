/* The floor for one query on a fresh connection: a blocking Unix-socket
 * server that accepts, reads a line, writes a reply of the same length as
 * archon's, and closes. Usage: echo PATH REPLY */
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strncpy(sa.sun_path, argv[1], sizeof sa.sun_path - 1);
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) || listen(l, 128)) return 1;
    size_t n = strlen(argv[2]);
    char buf[4096];
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c < 0) continue;
        if (read(c, buf, sizeof buf) > 0 && write(c, argv[2], n) < 0) {}
        close(c);
    }
}
