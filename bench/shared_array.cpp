// bench_shared_array: crew::SharedArray against passing the same data by
// value, and against a plain loop, side by side in one run.
//
//   bench_shared_array [--reps=5] [--scale=1] [--only=TEXT] [--python=python3]
//
// Tables:
//   blur 24 x 4 MiB     24 grey images of 2048 x 2048 bytes, a 3x3 box blur
//                       each, on 2 workers: a sequential loop in this process
//                       (the reference), ProcessExecutor<> by value (each task
//                       takes a std::vector<std::uint8_t> and returns the
//                       blurred one; and through map(), chunk 1),
//                       ProcessExecutor<> on SharedArray (each
//                       task blurs its image in place), and ThreadExecutor<>
//                       on SharedArray. ms per batch of 24; the speedup is
//                       the loop's time over each row's. A second loop
//                       also makes the copies a batch by value makes (new
//                       buffers for the 24 calls and results, a copy in and
//                       out in the worker): 2 x the first loop over it
//                       bounds what 2 cores reach by value. Python's rows (numpy, from
//                       bench/python_pool.py): its own loop, its pool with
//                       each image pickled, and shared_memory in place.
//   1 GiB round trip    serial submit + get of one task, N = 200 (scaled):
//                       an empty task (the reference); a task given a 1 GiB
//                       SharedArray that writes one byte and returns its size;
//                       a task given it that returns it (handed there and
//                       back; needs the executor to pin results). us per trip.
//   echo 16/64 MiB      a std::vector<float> of 16 or 64 MiB to a task that
//                       returns it, submit + get, 1 worker, on each channel
//                       and on ThreadExecutor, against one memcpy of the same
//                       size into a buffer already faulted in (the
//                       reference), and against two copies into new
//                       vectors (the floor of any echo by value: the
//                       worker's argument and the result here are new
//                       memory). ms per echo. Each row's echo follows
//                       the other rows' (its buffers are fresh); the "back
//                       to back" row times 8 echoes in a row (steady state).
// --scale multiplies the image size's rows and N. Executors and arrays are
// made before the clock starts; each case runs once unmeasured first.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <crew/crew.hpp>
#include <crew/shared_array.hpp>

#include "bench.hpp"

namespace {

constexpr int width = 2048;

/// 3x3 box blur of a grey image, in place, keeping copies of the two
/// original rows it still needs. Edges average the neighbours they have.
void blur(std::uint8_t* pixels, int w, int h) {
    std::vector<std::uint8_t> above(static_cast<std::size_t>(w)), current(static_cast<std::size_t>(w));
    for (int y = 0; y < h; ++y) {
        std::uint8_t* row = pixels + static_cast<std::ptrdiff_t>(y) * w;
        above.swap(current);
        std::memcpy(current.data(), row, static_cast<std::size_t>(w));
        const std::uint8_t* up = y > 0 ? above.data() : nullptr;
        const std::uint8_t* down = y + 1 < h ? row + w : nullptr;
        const std::uint8_t* mid = current.data();
        auto at = [&](int x) {
            int sum = 0, count = 0;
            for (int xx = x - 1; xx <= x + 1; ++xx) {
                if (xx < 0 || xx >= w) continue;
                sum += mid[xx];
                ++count;
                if (up) {
                    sum += up[xx];
                    ++count;
                }
                if (down) {
                    sum += down[xx];
                    ++count;
                }
            }
            return static_cast<std::uint8_t>(sum / count);
        };
        row[0] = at(0);
        if (up && down) {
            for (int x = 1; x + 1 < w; ++x)
                row[x] = static_cast<std::uint8_t>((up[x - 1] + up[x] + up[x + 1] + mid[x - 1] + mid[x] + mid[x + 1] +
                                                    down[x - 1] + down[x] + down[x + 1]) /
                                                   9);
        } else {
            for (int x = 1; x + 1 < w; ++x) row[x] = at(x);
        }
        if (w > 1) row[w - 1] = at(w - 1);
    }
}

std::vector<std::uint8_t> blur_by_value(std::vector<std::uint8_t> image, int h) {
    blur(image.data(), width, h);
    return image;
}

/// One image for map(): its height follows from its size.
std::vector<std::uint8_t> blur_one(const std::vector<std::uint8_t>& image) {
    std::vector<std::uint8_t> out = image;
    blur(out.data(), width, static_cast<int>(out.size() / width));
    return out;
}

void blur_shared(crew::SharedArray<std::uint8_t> image, int h) { blur(image.data(), width, h); }

int nothing() { return 0; }

std::vector<float> echo(std::vector<float> v) { return v; }

template <class Executor>
bench::Case echo_case(std::string name, std::size_t floats) {
    auto ex = std::make_shared<Executor>(1);
    auto data = std::make_shared<std::vector<float>>(floats, 1.5f);
    return {std::move(name), true, [ex, data] {
                std::vector<float> back;
                const double s = bench::seconds([&] { back = ex->submit(echo, *data).get(); });
                bench::check(back.size() == data->size() && back.back() == 1.5f, "echoed");
                return s * 1e3;
            }};
}

/// The same echo `rounds` times back to back, ms per echo: the steady state
/// of a program that keeps sending large data (the executor keeps its large
/// buffers while they keep coming; the row above pays for fresh ones).
template <class Executor>
bench::Case echo_back_to_back_case(std::string name, std::size_t floats, int rounds) {
    auto ex = std::make_shared<Executor>(1);
    auto data = std::make_shared<std::vector<float>>(floats, 1.5f);
    return {std::move(name), true, [ex, data, rounds] {
                std::size_t got = 0;
                const double s = bench::seconds([&] {
                    for (int i = 0; i < rounds; ++i) got += ex->submit(echo, *data).get().size();
                });
                bench::check(got == data->size() * static_cast<std::size_t>(rounds), "echoed");
                return s * 1e3 / rounds;
            }};
}

std::vector<bench::Case> echo_cases(std::size_t bytes, const bench::Python& python) {
    const std::size_t floats = bytes / sizeof(float);
    std::vector<bench::Case> cases;
    auto from = std::make_shared<std::vector<float>>(floats, 2.5f);
    auto to = std::make_shared<std::vector<float>>(floats);
    cases.push_back({"memcpy", false, [from, to] {
                         const double s = bench::seconds(
                             [&] { std::memcpy(to->data(), from->data(), from->size() * sizeof(float)); });
                         bench::check((*to)[to->size() / 2] == 2.5f, "copied");
                         return s * 1e3;
                     }});
    // What any echo by value must do: make two new vectors (the task's
    // argument in the worker, the result here), each a copy into memory
    // fresh from the system (a page fault and zeroing per page).
    cases.push_back({"2 copies into new vectors (the by-value floor)", false, [from] {
                         float seen = 0;
                         const double s = bench::seconds([&] {
                             std::vector<float> argument(from->begin(), from->end());
                             std::vector<float> result(argument.begin(), argument.end());
                             seen = result[result.size() / 2];
                         });
                         bench::check(seen == 2.5f, "copied");
                         return s * 1e3;
                     }});
    cases.push_back(echo_case<crew::ProcessExecutor<>>("ProcessExecutor<> (shm)", floats));
    cases.push_back(echo_back_to_back_case<crew::ProcessExecutor<>>("ProcessExecutor<> (shm), 8 back to back", floats, 8));
    cases.push_back(echo_case<crew::ProcessExecutor<crew::ipc::Pipe>>("ProcessExecutor<Pipe>", floats));
    cases.push_back(echo_case<crew::ProcessExecutor<crew::ipc::Socket>>("ProcessExecutor<Socket>", floats));
    cases.push_back(echo_case<crew::ProcessExecutor<crew::ipc::MessageQueue>>("ProcessExecutor<MessageQueue>", floats));
    cases.push_back(echo_case<crew::ThreadExecutor<>>("ThreadExecutor<>", floats));
    if (!python.command.empty()) {
        const std::string mib = std::to_string(bytes >> 20);
        cases.push_back(python.row("Python: copy of bytes into a bytearray", "echo " + mib + " memcpy"));
        cases.push_back(python.row("Python: ProcessPoolExecutor(1), bytes pickled", "echo " + mib + " pickle"));
    }
    return cases;
}

std::size_t touch(crew::SharedArray<std::uint8_t> a) {
    a[a.size() / 2] = 1;
    return a.size();
}

crew::SharedArray<std::uint8_t> hand_back(crew::SharedArray<std::uint8_t> a) {
    a[a.size() - 1] = 2;
    return a;
}

void draw(std::uint8_t* p, std::size_t n, int k) {
    for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<std::uint8_t>((i * 7 + static_cast<std::size_t>(k) * 13) % 251);
}

std::vector<bench::Case> blur_cases(int images, int h, const bench::Python& python) {
    const std::size_t pixels = static_cast<std::size_t>(width) * static_cast<std::size_t>(h);
    std::vector<bench::Case> cases;

    auto plain = std::make_shared<std::vector<std::vector<std::uint8_t>>>();
    for (int k = 0; k < images; ++k) {
        plain->emplace_back(pixels);
        draw(plain->back().data(), pixels, k);
    }
    cases.push_back({"sequential loop", false, [plain, h] {
                         return bench::seconds([&] {
                                    for (auto& image : *plain) blur(image.data(), width, h);
                                }) *
                                1e3;
                     }});
    // The CPU work of a batch by value, whatever the transport, done in one
    // thread: this process encodes each image into a new buffer (all 24 are
    // submitted before the first result) and decodes each result into a new
    // vector (all kept); the worker copies the argument into its vector and
    // the result out of it (into buffers used before). Two cores cannot run
    // a batch by value in less than half of this.
    cases.push_back({"loop doing a by-value batch's copies too (its least CPU work)", false, [plain, h] {
                         const std::size_t size = (*plain)[0].size();
                         std::vector<std::vector<std::uint8_t>> calls, results;
                         std::vector<std::uint8_t> argument(size), reply(size);
                         const double s = bench::seconds([&] {
                             for (const auto& image : *plain) calls.emplace_back(image.begin(), image.end());
                             for (const auto& call : calls) {
                                 std::memcpy(argument.data(), call.data(), size);
                                 blur(argument.data(), width, h);
                                 std::memcpy(reply.data(), argument.data(), size);
                                 results.emplace_back(reply.begin(), reply.end());
                             }
                         });
                         bench::check(results.size() == plain->size(), "copied");
                         return s * 1e3;
                     }});

    auto pool = std::make_shared<crew::ProcessExecutor<>>(2);
    cases.push_back({"ProcessExecutor<>, 2 workers, std::vector by value", true, [pool, plain, h] {
                         std::vector<crew::Future<std::vector<std::uint8_t>>> fs;
                         std::vector<std::vector<std::uint8_t>> out;
                         const double s = bench::seconds([&] {
                             for (const auto& image : *plain) fs.push_back(pool->submit(blur_by_value, image, h));
                             for (auto& f : fs) out.push_back(f.get());
                         });
                         bench::check(out.size() == plain->size() && out[0].size() == (*plain)[0].size(), "results");
                         return s * 1e3;
                     }});

    cases.push_back({"ProcessExecutor<>, 2 workers, map by value (chunk 1)", true, [pool, plain] {
                         std::vector<std::vector<std::uint8_t>> out;
                         const double s = bench::seconds([&] { out = pool->map(blur_one, *plain, 1); });
                         bench::check(out.size() == plain->size() && out[0].size() == (*plain)[0].size(), "results");
                         return s * 1e3;
                     }});

    auto shared = std::make_shared<std::vector<crew::SharedArray<std::uint8_t>>>();
    for (int k = 0; k < images; ++k) {
        shared->emplace_back(pixels);
        draw(shared->back().data(), pixels, k);
    }
    cases.push_back({"ProcessExecutor<>, 2 workers, SharedArray in place", true, [pool, shared, h] {
                         std::vector<crew::Future<void>> fs;
                         const double s = bench::seconds([&] {
                             for (const auto& image : *shared) fs.push_back(pool->submit(blur_shared, image, h));
                             for (auto& f : fs) f.get();
                         });
                         return s * 1e3;
                     }});

    auto threads = std::make_shared<crew::ThreadExecutor<>>(2);
    cases.push_back({"ThreadExecutor<>, 2 threads, SharedArray in place", true, [threads, shared, h] {
                         std::vector<crew::Future<void>> fs;
                         const double s = bench::seconds([&] {
                             for (const auto& image : *shared) fs.push_back(threads->submit(blur_shared, image, h));
                             for (auto& f : fs) f.get();
                         });
                         return s * 1e3;
                     }});

    if (python.has_numpy) {
        const std::string rows = " " + std::to_string(h);
        cases.push_back(python.row("Python: sequential loop (numpy)", "blur loop" + rows));
        cases.push_back(python.row("Python: ProcessPoolExecutor(2), pickled by value", "blur pickle" + rows));
        cases.push_back(python.row("Python: ProcessPoolExecutor(2), shared_memory in place", "blur shared" + rows));
    } else if (!python.command.empty()) {
        std::printf("\n(%s has no numpy: the Python blur rows are skipped)\n", python.command.c_str());
    }
    return cases;
}

std::vector<bench::Case> huge_cases(std::size_t n, bool with_return, const bench::Python& python) {
    std::vector<bench::Case> cases;
    auto ex = std::make_shared<crew::ProcessExecutor<>>(1);
    cases.push_back({"empty task: submit + get", false, [ex, n] {
                         int sum = 0;
                         const double s = bench::seconds([&] {
                             for (std::size_t i = 0; i < n; ++i) sum += ex->submit(nothing).get();
                         });
                         bench::check(sum == 0, "every task ran");
                         return s / static_cast<double>(n) * 1e6;
                     }});
    auto big = std::make_shared<crew::SharedArray<std::uint8_t>>(std::size_t{1} << 30);
    cases.push_back({"1 GiB SharedArray to a task", true, [ex, big, n] {
                         std::size_t sum = 0;
                         const double s = bench::seconds([&] {
                             for (std::size_t i = 0; i < n; ++i) sum += ex->submit(touch, *big).get();
                         });
                         bench::check(sum == n * big->size() && (*big)[big->size() / 2] == 1, "the task saw it");
                         return s / static_cast<double>(n) * 1e6;
                     }});
    if (with_return)
        cases.push_back({"1 GiB SharedArray to a task and back", true, [ex, big, n] {
                             std::size_t sum = 0;
                             const double s = bench::seconds([&] {
                                 for (std::size_t i = 0; i < n; ++i) sum += ex->submit(hand_back, *big).get().size();
                             });
                             bench::check(sum == n * big->size() && (*big)[big->size() - 1] == 2, "came back");
                             return s / static_cast<double>(n) * 1e6;
                         }});
    if (!python.command.empty()) {
        const std::string trips = " " + std::to_string(n);
        cases.push_back(python.row("Python: empty task, ProcessPoolExecutor(1)", "huge empty" + trips));
        cases.push_back(python.row("Python: 1 GiB shared_memory, attached by name in the task", "huge shared" + trips));
    }
    return cases;
}

}  // namespace

int main(int argc, char** argv) {
    crew::Session session(argc, argv);
    const auto o = bench::parse(argc, argv, false);
    const auto python = bench::Python::find(o.python);

    if (o.wants("blur")) {
        const int h = static_cast<int>(o.n(2048));
        const std::string title = "blur 24 images of " + std::to_string(width) + " x " + std::to_string(h) +
                                  " bytes (" + bench::fmt(width * static_cast<double>(h) / (1 << 20)) +
                                  " MiB), 2 workers";
        const auto results = bench::measure(blur_cases(24, h, python), o.reps);
        bench::report(title, "ms per batch", results);
        // Each row against the loop in its own language; results[1] bounds
        // what 2 workers can reach by value.
        auto median_of = [&](std::string_view name) {
            for (const auto& r : results)
                if (r.name == name) return r.median;
            return 0.0;
        };
        const double python_loop = median_of("Python: sequential loop (numpy)");
        std::printf("\n| speedup over the sequential loop in the same language | |\n|---|---:|\n");
        std::printf("| by value at best on 2 cores (2 x loop / its least CPU work) | %sx |\n",
                    bench::fmt(2 * results[0].median / results[1].median).c_str());
        for (const auto& r : results) {
            if (r.crew) std::printf("| %s | %sx |\n", r.name.c_str(), bench::fmt(results[0].median / r.median).c_str());
            if (python_loop > 0 && r.name.starts_with("Python: ProcessPool"))
                std::printf("| %s | %sx |\n", r.name.c_str(), bench::fmt(python_loop / r.median).c_str());
        }
    }
    for (std::size_t mib : {16, 64}) {
        const std::string title = "echo a " + std::to_string(mib) + " MiB std::vector<float>, 1 worker";
        if (!o.wants(title)) continue;
        bench::report(title, "ms per echo", bench::measure(echo_cases(mib << 20, python), o.reps),
                      bench::Target{5.0, "memcpy"});
    }
    if (o.wants("1 GiB")) {
        const std::size_t n = o.n(200);
        // Results need the executor to keep a returned array open until this
        // process has it; try one before measuring.
        bool with_return = true;
        try {
            crew::ProcessExecutor<> probe(1);
            crew::SharedArray<std::uint8_t> small(16);
            (void)probe.submit(hand_back, small).get();
        } catch (const crew::CodecError& e) {
            std::printf("\n(a SharedArray returned from a task: %s; its row is skipped)\n", e.what());
            with_return = false;
        }
        bench::report("1 GiB SharedArray handed to a task, serial round trips (N = " + std::to_string(n) + ")",
                      "us per trip", bench::measure(huge_cases(n, with_return, python), o.reps),
                      bench::Target{3.0, "empty task: submit + get"});
    }
    return 0;
}
