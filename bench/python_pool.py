"""The peer of bench_process's pipelined row: Python's ProcessPoolExecutor
with 2 workers, N empty tasks submitted, then every result() taken.

    python3 bench/python_pool.py N     # prints microseconds per task

The pool is started and warmed up (one task per worker) before the clock
starts, as crew's executors are.
"""
import concurrent.futures
import sys
import time


def nothing():
    return 0


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
        for f in [pool.submit(nothing) for _ in range(4)]:
            f.result()
        start = time.perf_counter()
        futures = [pool.submit(nothing) for _ in range(n)]
        total = sum(f.result() for f in futures)
        elapsed = time.perf_counter() - start
    assert total == 0
    print(f"{elapsed / n * 1e6:.3f}")


if __name__ == "__main__":
    main()
