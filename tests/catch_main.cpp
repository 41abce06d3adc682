// Catch2 v2 needs its main() compiled once; v3 links Catch2::Catch2WithMain.
#define CATCH_CONFIG_MAIN
#include "catch.hpp"
