"""mpi4py.futures.MPIPoolExecutor on the cases of bench/mpi.cpp (median of 5
after a warm-up): many tasks in flight, serial round trips, a 16 MiB bytes
object there and back.

    export OMPI_MCA_btl=self,vader OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo \
           OMPI_MCA_pml=ob1 OMPI_MCA_rmaps_base_oversubscribe=1
    mpirun -n 3 /usr/bin/python3 -m mpi4py.futures bench/mpi_futures.py
"""
import statistics
import time

from mpi4py.futures import MPIPoolExecutor

MANY, SERIAL, BIG_REPS, BIG = 20000, 2000, 5, 16 << 20


def square(x):
    return x * x


def plus_one(b):
    return bytes((x + 1) & 0xFF for x in b) if len(b) < 1024 else (
        bytes(memoryview(bytearray(b)).tobytes().translate(bytes((i + 1) & 0xFF for i in range(256)))))


def median(f, reps=5):
    f()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def row(what, seconds, n):
    print(f"| {'mpi4py.futures (2 ranks)':<28} | {what:<16} | {seconds / n * 1e6:10.2f} us |")


if __name__ == "__main__":
    with MPIPoolExecutor() as ex:
        def many():
            for f in [ex.submit(square, i) for i in range(MANY)]:
                f.result()

        def serial():
            for i in range(SERIAL):
                ex.submit(square, i).result()

        data = bytes([7]) * BIG

        def big():
            for _ in range(BIG_REPS):
                assert ex.submit(plus_one, data).result()[0] == 8

        row("many in flight", median(many), MANY)
        row("serial", median(serial, 3), SERIAL)
        row("16 MiB round trip", median(big), BIG_REPS)
