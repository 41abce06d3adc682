"""Python's multiprocessing, the peer of bench_process and bench_shared_array.
Each call measures one figure and prints it (set-up and warm-up untimed).

    python3 bench/python_pool.py N
        ProcessPoolExecutor(max_workers=2), N empty tasks submitted, then
        every result() taken: microseconds per task (bench_process).
    python3 bench/python_pool.py blur loop|pickle|shared [ROWS]
        24 grey images of 2048 x ROWS bytes (default 2048: 4 MiB), a 3x3 box
        blur each with numpy: a loop in this process, ProcessPoolExecutor(2)
        with each image pickled there and back, or the images in one
        multiprocessing.shared_memory block blurred in place (each worker
        attaches the block once and keeps it). Milliseconds per batch of 24.
        Needs numpy; prints "skip" without it.
    python3 bench/python_pool.py echo MIB memcpy|pickle
        MIB MiB of bytes to a task that returns them, 1 worker, submit +
        result(); against one copy into a buffer already faulted in.
        Milliseconds per echo.
    python3 bench/python_pool.py huge empty|shared N
        Serial submit + result(), 1 worker, N trips: an empty task, or a task
        handed the name of a 1 GiB shared_memory block that attaches it,
        writes one byte, closes it and returns its size (what the docs show).
        Microseconds per trip.

    python3 bench/python_pool.py probe
        Prints "numpy" when numpy is there, else "plain".

Pools are started and warmed up (one task per worker) before the clock
starts, as crew's executors are.
"""
import concurrent.futures
import sys
import time
from multiprocessing import shared_memory

WIDTH = 2048
IMAGES = 24


def nothing():
    return 0


def warm(pool, workers):
    for f in [pool.submit(nothing) for _ in range(2 * workers)]:
        f.result()


def timed(run):
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


# --- empty tasks, pipelined ---------------------------------------------------

def pipelined(n):
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
        warm(pool, 2)
        futures = []
        total = 0

        def run():
            nonlocal total
            futures.extend(pool.submit(nothing) for _ in range(n))
            total = sum(f.result() for f in futures)

        elapsed = timed(run)
    assert total == 0
    return elapsed / n * 1e6


# --- blur ---------------------------------------------------------------------

_counts = {}
_attached = {}


def blur(image):
    """3x3 box blur in place; edges average the neighbours they have (as
    bench/shared_array.cpp's blur does)."""
    import numpy as np
    a = image.astype(np.uint16)
    rows = a.copy()
    rows[1:] += a[:-1]
    rows[:-1] += a[1:]
    box = rows.copy()
    box[:, 1:] += rows[:, :-1]
    box[:, :-1] += rows[:, 1:]
    counts = _counts.get(image.shape)
    if counts is None:
        h, w = image.shape
        per_row = np.full(h, 3, np.uint16)
        per_row[[0, -1]] = 2
        per_col = np.full(w, 3, np.uint16)
        per_col[[0, -1]] = 2
        counts = _counts[image.shape] = np.outer(per_row, per_col)
    image[...] = box // counts


def blur_by_value(image):
    blur(image)
    return image


def blur_shared(name, k, rows):
    import numpy as np
    block = _attached.get(name)
    if block is None:
        block = _attached[name] = shared_memory.SharedMemory(name=name)
    images = np.ndarray((IMAGES, rows, WIDTH), np.uint8, buffer=block.buf)
    blur(images[k])
    del images


def draw(images):
    import numpy as np
    i = np.arange(images[0].size, dtype=np.uint64)
    for k, image in enumerate(images):
        image.reshape(-1)[...] = (i * 7 + k * 13) % 251


def blur_batch(mode, rows):
    try:
        import numpy as np
    except ImportError:
        return None
    if mode == "loop":
        images = [np.empty((rows, WIDTH), np.uint8) for _ in range(IMAGES)]
        draw(images)
        blur(images[0].copy())  # warm-up: numpy's first call, the counts
        return timed(lambda: [blur(image) for image in images]) * 1e3
    if mode == "pickle":
        images = [np.empty((rows, WIDTH), np.uint8) for _ in range(IMAGES)]
        draw(images)
        out = []
        with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
            warm(pool, 2)

            def run():
                futures = [pool.submit(blur_by_value, image) for image in images]
                out.extend(f.result() for f in futures)

            elapsed = timed(run)
        assert len(out) == IMAGES and out[0].shape == images[0].shape
        return elapsed * 1e3
    # The block is made before the pool, so that the workers share this
    # process's resource tracker: a worker's own tracker would unlink the
    # block when the worker exits, and warn.
    block = shared_memory.SharedMemory(create=True, size=IMAGES * rows * WIDTH)
    try:
        images = np.ndarray((IMAGES, rows, WIDTH), np.uint8, buffer=block.buf)
        draw(images)
        with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
            warm(pool, 2)
            # Each worker attaches once before the clock starts, as crew's
            # worker keeps the arrays it was handed.
            for f in [pool.submit(blur_shared, block.name, k, rows) for k in range(4)]:
                f.result()

            def run():
                for f in [pool.submit(blur_shared, block.name, k, rows) for k in range(IMAGES)]:
                    f.result()

            elapsed = timed(run)
        del images
    finally:
        block.close()
        block.unlink()
    return elapsed * 1e3


# --- echo ---------------------------------------------------------------------

def echo(data):
    return data


def echo_once(mib, mode):
    size = mib << 20
    data = bytes(bytearray(b"\x01") * size)
    if mode == "memcpy":
        target = bytearray(size)
        view = memoryview(target)
        view[:] = data  # faulted in, as crew's reference buffer is
        return timed(lambda: view.__setitem__(slice(None), data)) * 1e3
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
        warm(pool, 1)
        pool.submit(echo, data).result()  # one unmeasured echo, as crew's rows run once first
        out = []
        elapsed = timed(lambda: out.append(pool.submit(echo, data).result()))
        assert len(out[0]) == size
        return elapsed * 1e3


# --- a 1 GiB shared_memory block handed to a task ------------------------------

def touch(name):
    block = shared_memory.SharedMemory(name=name)
    block.buf[block.size // 2] = 1
    size = block.size
    block.close()
    return size


def huge_trips(mode, n):
    if mode == "empty":
        with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
            warm(pool, 1)
            return timed(lambda: [pool.submit(nothing).result() for _ in range(n)]) / n * 1e6
    block = shared_memory.SharedMemory(create=True, size=1 << 30)  # before the pool, as in blur_batch
    try:
        with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
            warm(pool, 1)
            pool.submit(touch, block.name).result()
            total = 0

            def run():
                nonlocal total
                total = sum(pool.submit(touch, block.name).result() for _ in range(n))

            elapsed = timed(run)
        assert total == n * block.size and block.buf[block.size // 2] == 1
    finally:
        block.close()
        block.unlink()
    return elapsed / n * 1e6


def main():
    args = sys.argv[1:]
    if args == ["probe"]:  # what bench_shared_array may ask for
        try:
            import numpy  # noqa: F401
            print("numpy")
        except ImportError:
            print("plain")
        return
    if not args or args[0].isdigit():
        figure = pipelined(int(args[0]) if args else 20000)
    elif args[0] == "blur":
        figure = blur_batch(args[1], int(args[2]) if len(args) > 2 else 2048)
    elif args[0] == "echo":
        figure = echo_once(int(args[1]), args[2])
    elif args[0] == "huge":
        figure = huge_trips(args[1], int(args[2]))
    else:
        sys.exit(f"python_pool.py: unknown mode {args[0]!r} (see the docstring)")
    print("skip" if figure is None else f"{figure:.3f}")


if __name__ == "__main__":
    main()
