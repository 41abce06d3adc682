// One include for Catch2 v3 (when installed) or the v2.13 single header Debian ships.
#pragma once
#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif
