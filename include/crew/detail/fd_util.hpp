// crew/detail/fd_util.hpp — small rules every descriptor crew creates obeys.
//
// Never on 0, 1 or 2: a program started with stdin/stdout/stderr closed gets
// its next descriptors there, and a channel on fd 2 would receive whatever the
// program (or a library) logs, while a write to "stdout" could land in a
// worker's pipe. Every fd crew makes (pipes, socketpairs, memfds, shm objects,
// pidfds, the bootstrap socket) goes through above_stdio() right after it was
// made. Cost: one fcntl() and one close() only in such a program; elsewhere a
// comparison.
#pragma once

#include <cerrno>

#include <fcntl.h>
#include <unistd.h>

namespace crew::detail {

/// Returns `fd` if it is 3 or more (or negative: an error passed through);
/// else a close-on-exec duplicate at 3 or more, and closes `fd`. On failure
/// closes `fd` and returns -1 with errno set. Async-signal-safe (fcntl, close).
inline int above_stdio(int fd) noexcept {
    if (fd < 0 || fd > 2) return fd;
    const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
    const int err = errno;
    ::close(fd);
    errno = err;
    return moved;
}

/// Both ends of a pipe2()/socketpair() result, moved above stdio. On failure
/// closes both and returns false with errno set.
inline bool above_stdio(int (&fds)[2]) noexcept {
    fds[0] = above_stdio(fds[0]);
    if (fds[0] < 0) {
        const int err = errno;
        ::close(fds[1]);
        errno = err;
        fds[1] = -1;
        return false;
    }
    fds[1] = above_stdio(fds[1]);
    if (fds[1] < 0) {
        const int err = errno;
        ::close(fds[0]);
        errno = err;
        fds[0] = -1;
        return false;
    }
    return true;
}

}  // namespace crew::detail
