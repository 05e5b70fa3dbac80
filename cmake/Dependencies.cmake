# Every third-party dependency as a CMake target, from Debian 12 packages.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)

pkg_check_modules(LIBUV REQUIRED IMPORTED_TARGET libuv)
pkg_check_modules(NGHTTP2 REQUIRED IMPORTED_TARGET libnghttp2)
pkg_check_modules(CARES REQUIRED IMPORTED_TARGET libcares)
add_library(dep::uv ALIAS PkgConfig::LIBUV)
add_library(dep::nghttp2 ALIAS PkgConfig::NGHTTP2)
add_library(dep::cares ALIAS PkgConfig::CARES)

# llhttp ships as C sources (node-llhttp); compile them into a static library.
set(LLHTTP_SOURCE_DIR /usr/share/llhttp CACHE PATH "llhttp C sources")
set(LLHTTP_INCLUDE_DIR /usr/share/include/llhttp CACHE PATH "llhttp header")
if(NOT EXISTS ${LLHTTP_SOURCE_DIR}/llhttp.c OR NOT EXISTS ${LLHTTP_INCLUDE_DIR}/llhttp.h)
  message(FATAL_ERROR "llhttp sources not found: install node-llhttp (scripts/setup.sh)")
endif()
add_library(llhttp STATIC ${LLHTTP_SOURCE_DIR}/api.c ${LLHTTP_SOURCE_DIR}/http.c
                          ${LLHTTP_SOURCE_DIR}/llhttp.c)
target_include_directories(llhttp SYSTEM PUBLIC ${LLHTTP_INCLUDE_DIR})
set_target_properties(llhttp PROPERTIES POSITION_INDEPENDENT_CODE ON C_STANDARD 99)
target_compile_options(llhttp PRIVATE -w)
add_library(dep::llhttp ALIAS llhttp)

# BoringSSL (android-libboringssl-dev). OpenSSL 3 is installed too and wins for
# a plain -lssl, so link the Android copies by full path and keep an RPATH to
# their folder, or the binary fails to start (libssl.so.0 not found).
set(BORINGSSL_LIBRARY_DIR /usr/lib/x86_64-linux-gnu/android CACHE PATH "BoringSSL libraries")
set(BORINGSSL_INCLUDE_DIR /usr/include/android CACHE PATH "BoringSSL headers")
foreach(component crypto ssl)
  if(NOT EXISTS ${BORINGSSL_LIBRARY_DIR}/lib${component}.so)
    message(FATAL_ERROR "BoringSSL lib${component}.so not found in ${BORINGSSL_LIBRARY_DIR}")
  endif()
  add_library(boringssl::${component} SHARED IMPORTED GLOBAL)
  set_target_properties(boringssl::${component} PROPERTIES
    IMPORTED_LOCATION ${BORINGSSL_LIBRARY_DIR}/lib${component}.so
    INTERFACE_INCLUDE_DIRECTORIES ${BORINGSSL_INCLUDE_DIR})
endforeach()
set_property(TARGET boringssl::ssl APPEND PROPERTY INTERFACE_LINK_LIBRARIES boringssl::crypto)
list(APPEND CMAKE_BUILD_RPATH ${BORINGSSL_LIBRARY_DIR})
list(APPEND CMAKE_INSTALL_RPATH ${BORINGSSL_LIBRARY_DIR})

find_package(nlohmann_json 3 REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(CLI11 REQUIRED)
find_package(GTest REQUIRED)
find_package(benchmark REQUIRED)
find_package(SQLite3 REQUIRED)
