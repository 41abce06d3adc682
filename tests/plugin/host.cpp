// A host program without crew: loads the plugin given as argv[1] and checks
// that crew refuses spawn and fork_server there (with a message naming
// crew::Session) and works with Start::fork. Exit 0 on success.
#include <cstdio>
#include <cstring>
#include <initializer_list>

#include <dlfcn.h>

int main(int argc, char** argv) {
    if (argc < 2) return 2;
    void* plugin = ::dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (plugin == nullptr) {
        std::fprintf(stderr, "dlopen: %s\n", ::dlerror());
        return 2;
    }
    using Run = int (*)(int, char*, std::size_t);
    auto run = reinterpret_cast<Run>(::dlsym(plugin, "crew_plugin_run"));
    if (run == nullptr) return 2;
    char message[2048] = {};
    for (int start : {1, 2}) {  // fork_server, spawn: refused
        if (run(start, message, sizeof message) != -1 || std::strstr(message, "crew::Session") == nullptr) {
            std::fprintf(stderr, "start %d was not refused clearly: %s\n", start, message);
            return 1;
        }
    }
    std::printf("refused as expected: %s\n", message);
    const int value = run(0, message, sizeof message);  // fork: works
    if (value != 42) {
        std::fprintf(stderr, "Start::fork in a plugin gave %d: %s\n", value, message);
        return 1;
    }
    return 0;
}
