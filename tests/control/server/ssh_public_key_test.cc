// SSH public key lines as users give them: the types sshd takes, the blob
// that must repeat its type, no options, one line; and the fingerprint as
// `ssh-keygen -lf` prints it.
#include "control/server/ssh_public_key.h"

#include <gtest/gtest.h>

namespace spacegate {
namespace {

// From ssh-keygen, with `ssh-keygen -lf` fingerprints.
constexpr const char* kEd25519 =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINRZTSniZdG46eWK+l3SlnxsqfTvxVYI+j2T1BT9D1y4 alice@laptop";
constexpr const char* kEd25519Fingerprint = "SHA256:h95eFf2MaRKpfwrQQvjK++hi4Z+0mutJ79qIkKDUvE4";
constexpr const char* kEcdsa =
    "ecdsa-sha2-nistp256 "
    "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEqb5uOIdTYBI3iclsoCtsihU3csOL+Yfeq8Nfjj"
    "LRPfpBVcpRmpQMWuPGu1Cw8hjrj3Auhpj3/ljgXFccCD0dQ= ci";
constexpr const char* kEcdsaFingerprint = "SHA256:mo1Ryrvj7n/iwlnSCCnVFGFN8Ha79/Z0s0kHM6dKZ2g";

TEST(SshPublicKeyTest, ReadsKeysAndFingerprintsThemLikeSshKeygen) {
  SshPublicKey key;
  std::string reason;
  ASSERT_TRUE(parseSshPublicKey(kEd25519, key, reason)) << reason;
  EXPECT_EQ(key.type, "ssh-ed25519");
  EXPECT_EQ(key.comment, "alice@laptop");
  EXPECT_EQ(key.line, kEd25519);
  EXPECT_EQ(sshKeyFingerprint(key), kEd25519Fingerprint);
  ASSERT_TRUE(parseSshPublicKey(kEcdsa, key, reason)) << reason;
  EXPECT_EQ(key.type, "ecdsa-sha2-nistp256");
  EXPECT_EQ(sshKeyFingerprint(key), kEcdsaFingerprint);
}

TEST(SshPublicKeyTest, SpacesTabsAndACrlfEndingAreTidied) {
  SshPublicKey key;
  std::string reason;
  std::string line = std::string(kEd25519);
  std::string untidy = "  " + line.substr(0, 11) + "\t" + line.substr(12, 68) + "  my\tkey \r";
  ASSERT_TRUE(parseSshPublicKey(untidy, key, reason)) << reason;
  EXPECT_EQ(key.line, line.substr(0, 80) + " my key");
  EXPECT_EQ(key.comment, "my key");
  ASSERT_TRUE(parseSshPublicKey(line.substr(0, 80), key, reason)) << reason;  // no comment
  EXPECT_EQ(key.comment, "");
  EXPECT_EQ(key.line, line.substr(0, 80));
}

TEST(SshPublicKeyTest, RefusalsSayWhatIsWrong) {
  std::string ed(kEd25519);
  std::string blob = ed.substr(12, 68);
  struct Case {
    std::string line;
    const char* reason;
  };
  const Case cases[] = {
      {"", "must not be empty"},
      {"   ", "must not be empty"},
      {"ssh-dss AAAAB3NzaC1kc3M= old", "must start with the key type"},
      {"from=\"10.0.0.1\" " + ed, "options in front of the key are not accepted"},
      {"ssh-ed25519", "the key's base64 blob is missing"},
      {"ssh-ed25519 not*base64", "not valid base64"},
      {"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINRZTSniZdG46eWK", "cut short or malformed"},
      {"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINRZTSniZdG46eWK+l3SlnxsqfTvxVYI+j2T1BT9D1y", "base64"},
      {"ssh-rsa " + blob, "the key's blob is not a ssh-rsa key"},
      {"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5", "holds no key after its type"},
      {ed + "\nssh-ed25519 " + blob, "must be one line"},
      {ed + std::string(8 * 1024, 'x'), "must be at most 8192 bytes"},
      {"-----BEGIN OPENSSH PRIVATE KEY-----", "is a private key"},
  };
  for (const Case& c : cases) {
    SshPublicKey key;
    std::string reason;
    EXPECT_FALSE(parseSshPublicKey(c.line, key, reason)) << c.line;
    EXPECT_NE(reason.find(c.reason), std::string::npos) << c.line << ": " << reason;
  }
}

}  // namespace
}  // namespace spacegate
