// 12_blur_in_place: worker processes that change big arrays in place, with
// crew::SharedArray, instead of copying them there and back.
//
// What it teaches: passing a std::vector to a process task copies it: the
// bytes are encoded, sent through a channel, decoded in the worker, and the
// result comes back the same way. A crew::SharedArray<T> is memory that the
// caller and its workers share: the task receives a small handle (48 bytes,
// whatever the array's size), maps the same memory, and writes into it; when
// get() returns, the caller sees what the worker wrote. No copy either way.
//
// Shared memory means shared: what one process writes, the other reads, with
// no protection at all. If two tasks wrote the same pixels at the same time,
// the result would be whatever interleaving happened (a data race, just as
// between threads). Here each task owns one whole image, so no two tasks ever
// touch the same element. Had we split one image into bands of rows, a band's
// first row would need the row above it, which the neighbouring task may
// already have blurred: each task would need a copy of the rows around its
// band, or the tasks would have to take turns with a process-shared lock
// (crew::ipc::Mutex). Giving each task elements of its own is the simple, fast
// way. The caller, too, must not touch an image while a task works on it: it
// reads the images only after every future is ready.
//
// What to look for in the output: the time of a plain loop, then of two
// worker processes over the same images; every blurred image is checked
// against the plain loop's (the program fails if one differs). The times are
// only printed: on a machine with one free core, processes win nothing.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

#include <crew/crew.hpp>
#include <crew/shared_array.hpp>

namespace {

constexpr int width = 1024;
constexpr int height = 1024;
constexpr int images = 8;

/// A 3x3 box blur of one grey image, in place: each pixel becomes the mean
/// of itself and its neighbours (edges use the neighbours they have). It
/// reads the original rows above and at y, so before overwriting row y it
/// keeps copies of the two original rows it still needs.
void blur(std::uint8_t* pixels, int w, int h) {
    std::vector<std::uint8_t> above(static_cast<std::size_t>(w)), current(static_cast<std::size_t>(w));
    for (int y = 0; y < h; ++y) {
        std::uint8_t* row = pixels + static_cast<std::ptrdiff_t>(y) * w;
        above.swap(current);  // the original row y-1 (not used for y == 0)
        current.assign(row, row + w);
        const std::uint8_t* below = y + 1 < h ? row + w : nullptr;  // not yet blurred
        for (int x = 0; x < w; ++x) {
            int sum = 0, count = 0;
            for (int dx = -1; dx <= 1; ++dx) {
                const int xx = x + dx;
                if (xx < 0 || xx >= w) continue;
                const auto i = static_cast<std::size_t>(xx);
                sum += current[i];
                ++count;
                if (y > 0) {
                    sum += above[i];
                    ++count;
                }
                if (below != nullptr) {
                    sum += below[i];
                    ++count;
                }
            }
            row[x] = static_cast<std::uint8_t>(sum / count);
        }
    }
}

/// The task: the worker receives a handle to the caller's image and blurs it
/// where it is. It returns nothing: the result is already in the caller's
/// memory.
void blur_image(crew::SharedArray<std::uint8_t> image, int w, int h) { blur(image.data(), w, h); }

/// A test pattern: stripes and a gradient, different for each image.
void draw(std::uint8_t* pixels, int k) {
    for (int y = 0; y < height; ++y)
        for (int x = 0; x < width; ++x)
            pixels[static_cast<std::size_t>(y) * width + static_cast<std::size_t>(x)] =
                static_cast<std::uint8_t>(((x / 8 + y / 8 + k) % 2) * 160 + (x + y * k) % 64);
}

double ms_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
    // First in main: the worker processes are fresh copies of this program,
    // and this is where they start serving tasks instead of running main().
    crew::Session session(argc, argv);

    const std::size_t pixels = std::size_t{width} * height;

    // The plain loop, on ordinary vectors: the answer to check against.
    std::vector<std::vector<std::uint8_t>> expected(images, std::vector<std::uint8_t>(pixels));
    for (int k = 0; k < images; ++k) draw(expected[static_cast<std::size_t>(k)].data(), k);
    auto start = std::chrono::steady_clock::now();
    for (auto& image : expected) blur(image.data(), width, height);
    const double loop_ms = ms_since(start);

    // The same images in shared memory. SharedArray(n) holds n zeros; we
    // draw into it as into any array.
    std::vector<crew::SharedArray<std::uint8_t>> shared;
    for (int k = 0; k < images; ++k) {
        shared.emplace_back(pixels);
        draw(shared.back().data(), k);
    }

    crew::ProcessExecutor<> ex(2);
    // Warm up: the clock should time the blur, not the workers' start.
    auto a = ex.submit(blur_image, crew::SharedArray<std::uint8_t>(), 0, 0);
    auto b = ex.submit(blur_image, crew::SharedArray<std::uint8_t>(), 0, 0);
    a.get();
    b.get();
    start = std::chrono::steady_clock::now();
    std::vector<crew::Future<void>> done;
    // Each task gets its own image: no two processes write the same pixels.
    // `shared` keeps every image alive here while the workers use it.
    for (auto& image : shared) done.push_back(ex.submit(blur_image, image, width, height));
    for (auto& f : done) f.get();  // after get(), the worker's writes are visible here
    const double process_ms = ms_since(start);

    std::printf("%d grey images of %dx%d, 3x3 blur in place\n", images, width, height);
    std::printf("  plain loop:               %7.1f ms\n", loop_ms);
    std::printf("  2 processes, SharedArray: %7.1f ms\n", process_ms);

    for (int k = 0; k < images; ++k) {
        const auto& mine = expected[static_cast<std::size_t>(k)];
        const auto& theirs = shared[static_cast<std::size_t>(k)];
        for (std::size_t i = 0; i < pixels; ++i) {
            if (theirs[i] != mine[i]) {
                std::fprintf(stderr, "FAIL: image %d differs from the plain loop's at pixel %zu\n", k, i);
                return 1;
            }
        }
    }
    std::printf("every image matches the plain loop's\n");
    return 0;
}
