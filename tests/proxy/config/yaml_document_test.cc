// Regression tests for loadYamlText() found by fuzz/gateway_config_fuzzer;
// each is named after the bug it pins, and its input is also in
// fuzz/corpus/gateway_config/.
#include "config/yaml_document.h"

#include <gtest/gtest.h>

#include <string>

namespace spacegate {
namespace {

// "workers: 7e800" killed `spacegate --config` with an uncaught
// std::out_of_range from std::stod: a float beyond double's range.
TEST(YamlDocumentTest, FloatBeyondDoubleRangeIsAnErrorNotACrash) {
  YamlDocument document;
  std::string error;
  EXPECT_FALSE(loadYamlText("workers: 7e800\n", document, error));
  EXPECT_NE(error.find("1: number out of range"), std::string::npos) << error;
  EXPECT_FALSE(loadYamlText("limits:\n  x: -1e-400\n", document, error));
  EXPECT_NE(error.find("2: number out of range"), std::string::npos) << error;
  ASSERT_TRUE(loadYamlText("a: 1e300\nb: +2.5\nc: .5\nd: -3.\ne: 1e\n", document, error));
  EXPECT_EQ(document.root["a"], 1e300);
  EXPECT_EQ(document.root["b"], 2.5);
  EXPECT_EQ(document.root["c"], 0.5);
  EXPECT_EQ(document.root["d"], -3.0);
  EXPECT_EQ(document.root["e"], "1e");
}

// A scalar of 300,000 digits overflowed the stack in std::regex_match,
// which recursed once per character.
TEST(YamlDocumentTest, LongNumericScalarDoesNotOverflowTheStack) {
  YamlDocument document;
  std::string error;
  std::string digits(300'000, '1');
  EXPECT_FALSE(loadYamlText("workers: " + digits + ".5\n", document, error));
  EXPECT_NE(error.find("number out of range"), std::string::npos) << error.substr(0, 100);
  ASSERT_TRUE(loadYamlText("workers: 0." + digits + "\n", document, error)) << error;
  EXPECT_TRUE(document.root["workers"].is_number_float());
}

// An anchor used inside its own node made the conversion recurse until the
// memory ran out (corpus: bad-alias-inside-its-anchor.yaml).
TEST(YamlDocumentTest, AliasInsideItsOwnAnchorIsRefused) {
  YamlDocument document;
  std::string error;
  EXPECT_FALSE(
      loadYamlText("defaults: &d {upstream: 10.0.0.5:8089, again: *d}\n", document, error));
  EXPECT_NE(error.find("1: "), std::string::npos) << error;
}

// Nine lines of anchors stand for 10^9 values ("billion laughs"; corpus:
// bad-billion-laughs.yaml): refused instead of expanded.
TEST(YamlDocumentTest, AliasesExpandingTooFarAreRefused) {
  std::string text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  for (char level = 'b'; level <= 'i'; ++level) {
    std::string previous(1, static_cast<char>(level - 1));
    text += std::string(1, level) + ": &" + level + " [";
    for (int i = 0; i < 10; ++i) text += (i ? ", *" : "*") + previous;
    text += "]\n";
  }
  YamlDocument document;
  std::string error;
  EXPECT_FALSE(loadYamlText(text, document, error));
  EXPECT_NE(error.find("too many values"), std::string::npos) << error;
  // Aliases that expand modestly still work.
  ASSERT_TRUE(loadYamlText("base: &b {upstream: 10.0.0.5:8089}\ncopy: *b\n", document, error))
      << error;
  EXPECT_EQ(document.root["copy"]["upstream"], "10.0.0.5:8089");
}

}  // namespace
}  // namespace spacegate
