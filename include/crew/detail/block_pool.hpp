// crew/detail/block_pool.hpp — recycles the small blocks a ThreadExecutor
// allocates once per task (ThreadPost, ThreadTask), across threads.
//
// Why: a task is allocated by the thread that submits it and freed by the
// worker that ran it. glibc's per-thread caches (tcache) do not help there:
// the worker's frees never reach the submitter's cache, so every allocation
// takes the arena's slow path, under the arena's lock, against the workers'
// frees. In a flood of posts that was half of the time per task
// (docs/benchmarks.md, issue 14).
//
// How: blocks come in two sizes (64 and 128 bytes). Each thread keeps a
// private list of free blocks per size; it frees into its own list, and when
// that list holds 2 x batch blocks it hands `batch` of them, as one batch, to
// a shared shelf (one lock per batch, not per block). A thread that
// allocates takes from its own list; when that is empty, one batch from the
// shelf; when there is none, operator new. So the submitter of a flood lives
// on the blocks its workers freed, at a lock per `batch` tasks.
//
// Bounds: at most max_shelved batches wait on the shelf (more go back to the
// system), at most 2 x batch blocks per size in each thread's list (freed
// when the thread ends): what the pool keeps is small and fixed, however
// large a burst was.
//
// Under AddressSanitizer the pool is off (plain new and delete), so a task
// used after it was freed is still reported.
#pragma once

#include <cstddef>
#include <mutex>
#include <new>

#include <crew/detail/sanitizers.hpp>

namespace crew::detail {

template <std::size_t BlockSize>
class BlockPool {
public:
    static void* allocate() {
        Cache& cache = cache_;
        if (cache.head == nullptr && !cache.closed) refill(cache);
        if (FreeBlock* b = cache.head) {
            cache.head = b->next;
            --cache.count;
            return b;
        }
        return ::operator new(BlockSize);
    }

    static void deallocate(void* p) noexcept {
        Cache& cache = cache_;
        if (cache.closed) return ::operator delete(p);
        if (!cache.owner_registered) register_owner(cache);  // so what it keeps goes when the thread ends
        auto* b = static_cast<FreeBlock*>(p);
        b->next = cache.head;
        cache.head = b;
        if (++cache.count == 2 * batch) spill(cache);
    }

    /// Most batches the shared shelf keeps.
    static constexpr std::size_t max_shelved = 32;
    /// Blocks per batch.
    static constexpr std::size_t batch = 128;

    /// Batches on the shelf now (for tests).
    static std::size_t shelved() {
        Shelf& s = shelf();
        std::lock_guard lock(s.mutex);
        return s.count;
    }

private:
    struct FreeBlock {
        FreeBlock* next;
    };
    static_assert(BlockSize >= sizeof(FreeBlock));


    /// This thread's free blocks. Trivially destructible, so it stays usable
    /// while other thread_local destructors still free tasks; CacheOwner
    /// empties it at thread exit and closes it.
    struct Cache {
        FreeBlock* head = nullptr;
        std::size_t count = 0;
        bool closed = false;
        bool owner_registered = false;
    };
    struct CacheOwner {
        ~CacheOwner() {
            Cache& cache = cache_;
            cache.closed = true;
            while (FreeBlock* b = cache.head) {
                cache.head = b->next;
                ::operator delete(b);
            }
            cache.count = 0;
        }
    };

    struct Shelf {
        std::mutex mutex;
        FreeBlock* batches[max_shelved] = {};  // each a list of `batch` blocks
        std::size_t count = 0;
    };

    static Shelf& shelf() {
        static Shelf* const s = new Shelf;  // never destroyed: threads may free tasks during exit
        return *s;
    }

    static void register_owner(Cache& cache) {
        cache.owner_registered = true;
        static thread_local CacheOwner owner;
        (void)owner;
    }

    [[gnu::noinline]] static void refill(Cache& cache) {
        if (!cache.owner_registered) register_owner(cache);
        Shelf& s = shelf();
        std::lock_guard lock(s.mutex);
        if (s.count == 0) return;
        cache.head = s.batches[--s.count];
        cache.count = batch;
    }

    // Hands `batch` of the cache's blocks to the shelf (or to the system when
    // the shelf is full).
    [[gnu::noinline]] static void spill(Cache& cache) noexcept {
        if (!cache.owner_registered) register_owner(cache);
        FreeBlock* first = cache.head;
        FreeBlock* last = first;
        for (std::size_t i = 1; i < batch; ++i) last = last->next;
        cache.head = last->next;
        cache.count -= batch;
        last->next = nullptr;
        {
            Shelf& s = shelf();
            std::lock_guard lock(s.mutex);
            if (s.count < max_shelved) {
                s.batches[s.count++] = first;
                return;
            }
        }
        while (first != nullptr) {
            FreeBlock* next = first->next;
            ::operator delete(first);
            first = next;
        }
    }

    static inline thread_local Cache cache_;
};

/// A base that gives a task class pooled operator new and delete when it fits
/// a pool block (the class must be final, so that `delete this` passes its
/// exact size).
struct PooledAllocation {
    static void* operator new(std::size_t size) {
        if constexpr (!under_asan) {
            if (size <= 64) return BlockPool<64>::allocate();
            if (size <= 128) return BlockPool<128>::allocate();
        }
        return ::operator new(size);
    }
    static void operator delete(void* p, std::size_t size) noexcept {
        if constexpr (!under_asan) {
            if (size <= 64) return BlockPool<64>::deallocate(p);
            if (size <= 128) return BlockPool<128>::deallocate(p);
        }
        ::operator delete(p);
    }
};

}  // namespace crew::detail
