#include "config/yaml_document.h"

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <fstream>
#include <sstream>
#include <string_view>

namespace spacegate {

namespace {

// YAML 1.2 core schema float: [-+]? (\.[0-9]+ | [0-9]+(\.[0-9]*)?) ([eE][-+]?[0-9]+)?
// Checked by hand: std::regex recurses once per character and overflows the
// stack on a scalar of a few hundred thousand digits.
bool isCoreSchemaFloat(std::string_view text) {
  size_t i = 0;
  auto skipDigits = [&] {
    size_t start = i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
    return i - start;
  };
  if (i < text.size() && (text[i] == '-' || text[i] == '+')) ++i;
  if (i < text.size() && text[i] == '.') {
    ++i;
    if (skipDigits() == 0) return false;
  } else {
    if (skipDigits() == 0) return false;
    if (i < text.size() && text[i] == '.') {
      ++i;
      skipDigits();
    }
  }
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    if (i < text.size() && (text[i] == '-' || text[i] == '+')) ++i;
    if (skipDigits() == 0) return false;
  }
  return i == text.size();
}

nlohmann::json scalarToJson(const YAML::Node& node) {
  const std::string& text = node.Scalar();
  if (node.Tag() == "!") return text;  // quoted: always a string
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  if (text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL") {
    return nullptr;
  }
  int64_t integer = 0;
  auto [end, code] = std::from_chars(text.data(), text.data() + text.size(), integer);
  if (code == std::errc() && end == text.data() + text.size()) return integer;
  if (isCoreSchemaFloat(text)) {
    // from_chars takes no '+'; unlike std::stod it reports a value beyond
    // double's range ("1e999") instead of throwing std::out_of_range.
    std::string_view digits = text;
    if (digits.front() == '+') digits.remove_prefix(1);
    double number = 0;
    auto [float_end, float_code] =
        std::from_chars(digits.data(), digits.data() + digits.size(), number);
    if (float_code != std::errc() || float_end != digits.data() + digits.size()) {
      throw YAML::ParserException(node.Mark(), "number out of range: " + text.substr(0, 40));
    }
    return number;
  }
  return text;
}

// Bounds on the conversion. An alias is expanded wherever it is used, so a
// few lines of anchors can stand for billions of values ("billion laughs"),
// and an anchor used inside its own node makes a cycle. Without aliases a
// document has fewer values than bytes and a config nests a few levels, so
// the bounds never bite on a real file.
struct ConversionBudget {
  size_t values_left;
  static constexpr int kMaxDepth = 64;
};

void convert(const YAML::Node& node, const std::string& path, nlohmann::json& out,
             std::map<std::string, int>& lines, ConversionBudget& budget, int depth) {
  if (budget.values_left == 0) {
    throw YAML::ParserException(node.Mark(), "too many values (aliases expand too far)");
  }
  --budget.values_left;
  if (depth > ConversionBudget::kMaxDepth) {
    throw YAML::ParserException(node.Mark(), "nested too deeply (or an alias inside its anchor)");
  }
  lines[path] = node.Mark().line + 1;
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined: out = nullptr; break;
    case YAML::NodeType::Scalar: out = scalarToJson(node); break;
    case YAML::NodeType::Sequence: {
      out = nlohmann::json::array();
      size_t index = 0;
      for (const YAML::Node& item : node) {
        nlohmann::json value;
        convert(item, path + "[" + std::to_string(index++) + "]", value, lines, budget, depth + 1);
        out.push_back(std::move(value));
      }
      break;
    }
    case YAML::NodeType::Map: {
      out = nlohmann::json::object();
      for (const auto& entry : node) {
        std::string key = entry.first.as<std::string>();
        std::string child_path = path.empty() ? key : path + "." + key;
        if (out.contains(key)) {
          throw YAML::ParserException(entry.first.Mark(), "duplicate key \"" + key + "\"");
        }
        nlohmann::json value;
        convert(entry.second, child_path, value, lines, budget, depth + 1);
        lines[child_path] = entry.first.Mark().line + 1;
        out[key] = std::move(value);
      }
      break;
    }
  }
}

}  // namespace

int YamlDocument::lineOf(const std::string& path) const {
  std::string current = path;
  while (true) {
    if (auto it = lines.find(current); it != lines.end()) return it->second;
    if (current.empty()) return 0;
    size_t cut = current.find_last_of(".[");
    current = cut == std::string::npos ? std::string() : current.substr(0, cut);
  }
}

bool loadYamlText(const std::string& text, YamlDocument& document, std::string& error) {
  try {
    YAML::Node node = YAML::Load(text);
    document.lines.clear();
    ConversionBudget budget{2 * text.size() + 1024};
    convert(node, "", document.root, document.lines, budget, 0);
    return true;
  } catch (const YAML::Exception& exception) {
    error = std::to_string(exception.mark.line + 1) + ": " + exception.msg;
    return false;
  }
}

bool loadYamlFile(const std::string& file, YamlDocument& document, std::string& error) {
  std::ifstream stream(file);
  if (!stream) {
    error = file + ": cannot read the file";
    return false;
  }
  std::stringstream contents;
  contents << stream.rdbuf();
  if (!loadYamlText(contents.str(), document, error)) {
    error = file + ":" + error;
    return false;
  }
  return true;
}

}  // namespace spacegate
