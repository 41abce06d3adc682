// bench/mpi.cpp — crew::MpiExecutor against its floor, raw MPI send/receive
// of the same work, and against crew::ProcessExecutor on the same machine.
// mpi4py.futures runs the same cases in bench/mpi_futures.py.
//
//   export OMPI_MCA_btl=self,vader OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
//   export OMPI_MCA_pml=ob1 OMPI_MCA_rmaps_base_oversubscribe=1
//   mpirun -n 3 ./bench_mpi          # crew: MpiExecutor (2 serving ranks) and ProcessExecutor (2 workers)
//   mpirun -n 3 ./bench_mpi raw      # raw MPI: rank 0 sends, ranks 1-2 compute and answer
//
// Cases (median of 5 runs after a warm-up):
//   many in flight : 20000 tasks square(int) submitted at once, then all awaited: time per task
//   serial         : submit(square, i).get() one after another: time per round trip
//   16 MiB         : a 16 MiB vector<uint8_t> there and back (each byte + 1): time per round trip
#include <crew/crew.hpp>
#include <crew/mpi.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

int square(int x) { return x * x; }
std::vector<std::uint8_t> plus_one(std::vector<std::uint8_t> v) {
    for (auto& b : v) b = static_cast<std::uint8_t>(b + 1);
    return v;
}

template <class F>
double median_seconds(F&& f, int reps = 5) {
    f();  // warm-up
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
        const auto start = std::chrono::steady_clock::now();
        f();
        t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

constexpr int many = 20000;
constexpr int serial = 2000;
constexpr int big_reps = 5;
constexpr std::size_t big = std::size_t{16} << 20;

void row(const char* who, const char* what, double seconds, int n) {
    std::printf("| %-28s | %-16s | %10.2f us |\n", who, what, seconds / n * 1e6);
}

template <class Ex>
void crew_cases(Ex& ex, const char* who) {
    row(who, "many in flight", median_seconds([&] {
            std::vector<crew::Future<int>> fs;
            fs.reserve(many);
            for (int i = 0; i < many; ++i) fs.push_back(ex.submit(square, i));
            for (auto& f : fs) (void)f.get();
        }), many);
    row(who, "serial", median_seconds([&] {
            for (int i = 0; i < serial; ++i) (void)ex.submit(square, i).get();
        }), serial);
    std::vector<std::uint8_t> data(big, 7);
    row(who, "16 MiB round trip", median_seconds([&] {
            for (int i = 0; i < big_reps; ++i)
                if (ex.submit(plus_one, data).get()[0] != 8) std::abort();
        }), big_reps);
}

// Raw MPI: the floor. Rank 0 sends each task as a message, ranks 1..N-1
// compute and answer; blocking calls (which busy-poll: the fastest MPI gets).
enum : int { tag_task = 1, tag_big = 2, tag_stop = 3 };

void raw_serve() {
    std::vector<std::uint8_t> buffer(big);
    for (;;) {
        MPI_Status st;
        MPI_Probe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &st);
        if (st.MPI_TAG == tag_stop) {
            MPI_Recv(nullptr, 0, MPI_BYTE, 0, tag_stop, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            return;
        }
        if (st.MPI_TAG == tag_task) {
            int x = 0;
            MPI_Recv(&x, 1, MPI_INT, 0, tag_task, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            x = square(x);
            MPI_Send(&x, 1, MPI_INT, 0, tag_task, MPI_COMM_WORLD);
        } else {
            MPI_Recv(buffer.data(), static_cast<int>(big), MPI_BYTE, 0, tag_big, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            for (auto& b : buffer) b = static_cast<std::uint8_t>(b + 1);
            MPI_Send(buffer.data(), static_cast<int>(big), MPI_BYTE, 0, tag_big, MPI_COMM_WORLD);
        }
    }
}

void raw_lead(int size) {
    const int ranks = size - 1;
    const char* who = "raw MPI send/recv";
    row(who, "many in flight", median_seconds([&] {
            // Up to 64 tasks outstanding per rank, as crew batches.
            std::vector<int> in(many), out(many);
            std::vector<MPI_Request> sends(many), recvs(many);
            for (int i = 0; i < many; ++i) {
                in[static_cast<std::size_t>(i)] = i;
                const int dest = 1 + i % ranks;
                MPI_Irecv(&out[static_cast<std::size_t>(i)], 1, MPI_INT, dest, tag_task, MPI_COMM_WORLD,
                          &recvs[static_cast<std::size_t>(i)]);
                MPI_Isend(&in[static_cast<std::size_t>(i)], 1, MPI_INT, dest, tag_task, MPI_COMM_WORLD,
                          &sends[static_cast<std::size_t>(i)]);
                if (i >= 64 * ranks) MPI_Wait(&recvs[static_cast<std::size_t>(i - 64 * ranks)], MPI_STATUS_IGNORE);
            }
            MPI_Waitall(many, sends.data(), MPI_STATUSES_IGNORE);
            MPI_Waitall(many, recvs.data(), MPI_STATUSES_IGNORE);
        }), many);
    row(who, "serial", median_seconds([&] {
            for (int i = 0; i < serial; ++i) {
                int x = i;
                MPI_Send(&x, 1, MPI_INT, 1, tag_task, MPI_COMM_WORLD);
                MPI_Recv(&x, 1, MPI_INT, 1, tag_task, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            }
        }), serial);
    std::vector<std::uint8_t> data(big, 7), back(big);
    row(who, "16 MiB round trip", median_seconds([&] {
            for (int i = 0; i < big_reps; ++i) {
                MPI_Send(data.data(), static_cast<int>(big), MPI_BYTE, 1, tag_big, MPI_COMM_WORLD);
                MPI_Recv(back.data(), static_cast<int>(big), MPI_BYTE, 1, tag_big, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                if (back[0] != 8) std::abort();
            }
        }), big_reps);
    for (int r = 1; r < size; ++r) MPI_Send(nullptr, 0, MPI_BYTE, r, tag_stop, MPI_COMM_WORLD);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc > 1 && std::strcmp(argv[1], "raw") == 0) {  // no Session: crew stays out of MPI
        MPI_Init(&argc, &argv);
        int rank = 0, size = 0;
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        if (rank == 0) {
            std::printf("| %-28s | %-16s | %13s |\n|---|---|---|\n", "", "case", "per task");
            raw_lead(size);
        } else {
            raw_serve();
        }
        MPI_Finalize();
        return 0;
    }
    crew::Session session(argc, argv);
    std::printf("| %-28s | %-16s | %13s |\n|---|---|---|\n", "", "case", "per task");
    {
        crew::MpiExecutor<> ex;
        crew_cases(ex, "crew::MpiExecutor (2 ranks)");
    }
    {
        crew::ProcessExecutor<> ex(2);
        crew_cases(ex, "crew::ProcessExecutor (2)");
    }
}
