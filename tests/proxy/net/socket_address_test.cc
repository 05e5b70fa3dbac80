#include "net/socket_address.h"

#include <gtest/gtest.h>

namespace spacegate {
namespace {

TEST(SocketAddressTest, ParsesEveryForm) {
  SocketAddress address;
  std::string error;
  ASSERT_TRUE(parseSocketAddress("127.0.0.1:8080", address, error));
  EXPECT_EQ(address.kind, SocketAddress::Kind::kIp);
  EXPECT_EQ(address.port, 8080);
  ASSERT_TRUE(parseSocketAddress("[::1]:443", address, error));
  EXPECT_EQ(address.ip.ss_family, AF_INET6);
  EXPECT_EQ(address.text(), "[::1]:443");
  ASSERT_TRUE(parseSocketAddress("ide.internal:3000", address, error));
  EXPECT_EQ(address.kind, SocketAddress::Kind::kHostname);
  ASSERT_TRUE(parseSocketAddress("unix:/run/ide.sock", address, error));
  EXPECT_EQ(address.path, "/run/ide.sock");
}

TEST(SocketAddressTest, RejectsBadForms) {
  SocketAddress address;
  std::string error;
  for (const char* bad : {"", "host", "host:", ":80", "host:0", "host:65536", "host:8x", "::1:80",
                          "[::1]80", "[nothex]:80", "bad_host!:80", "unix:", "unix:rel/path"}) {
    EXPECT_FALSE(parseSocketAddress(bad, address, error)) << bad;
    EXPECT_FALSE(error.empty()) << bad;
  }
  EXPECT_FALSE(parseSocketAddress("name.test:80", address, error, /*allow_hostname=*/false));
  EXPECT_FALSE(parseSocketAddress("unix:/x", address, error, true, /*allow_unix=*/false));
}

}  // namespace
}  // namespace spacegate
