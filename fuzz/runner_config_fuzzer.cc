// Fuzz target: a runner pool file into the runner's validator, as
// `spacegate-runner --config FILE` reads it (loadYamlText, then
// parseRunnerConfig). A refused file must say why; an accepted one must keep
// the promises the runner relies on: pools with names fit for a bridge,
// 0 <= min <= max, max within the subnet, no two pools sharing a bridge, a
// subnet or ports.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>

#include "config/yaml_document.h"
#include "runner/runner_config.h"
#include "split_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spacegate;
  std::string text(reinterpret_cast<const char*>(data), size);
  YamlDocument document;
  std::string load_error;
  if (!loadYamlText(text, document, load_error)) {
    FUZZ_CHECK(!load_error.empty(), "a refused YAML text without a reason");
    return 0;
  }
  RunnerConfig config;
  ValidationError error;
  if (!parseRunnerConfig(document.root, config, error)) {
    FUZZ_CHECK(!error.message.empty(), "a refused config without a reason");
    FUZZ_CHECK(document.lineOf(error.field) >= 0, "line of the refused field");
    return 0;
  }
  FUZZ_CHECK(!config.listen.empty() || !config.socket.empty(), "no listener accepted");
  FUZZ_CHECK(!config.state_dir.empty() && config.state_dir.front() == '/', "relative state_dir");
  FUZZ_CHECK(config.health_interval_ms >= 100, "health_interval below 100ms");
  FUZZ_CHECK(!config.pools.empty(), "no pools accepted");
  std::set<std::string> names;
  std::set<std::string> bridges;
  for (const PoolConfig& pool : config.pools) {
    FUZZ_CHECK(!pool.name.empty() && pool.name.size() <= 12, "pool name length");
    FUZZ_CHECK(names.insert(pool.name).second, "duplicate pool name accepted");
    FUZZ_CHECK(bridges.insert(pool.process.bridge).second, "shared bridge accepted");
    FUZZ_CHECK(!pool.process.bridge.empty() && pool.process.bridge.size() <= 15,
               "bridge name length");
    FUZZ_CHECK(pool.min >= 0 && pool.min <= pool.max, "min above max");
    FUZZ_CHECK(pool.max >= 1 && pool.max <= pool.process.subnetCapacity(), "max beyond the subnet");
    FUZZ_CHECK(pool.process.subnet_prefix >= 16 && pool.process.subnet_prefix <= 29,
               "subnet prefix range");
    uint32_t host_bits = (1u << (32 - pool.process.subnet_prefix)) - 1;
    FUZZ_CHECK((pool.process.subnet_address & host_bits) == 0, "subnet with host bits");
    FUZZ_CHECK(pool.process.port_base >= 1024 && pool.process.port_base + pool.max * 4 <= 65535,
               "port range");
  }
  return 0;
}
